# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint typecheck pytest install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-runs only when pyproject.toml changes. torch is served from this machine's local cache; the
# Debian packages come first (PyGObject builds against libgirepository1.0-dev).
$(STAMP): pyproject.toml | $(BIN)/python
	scripts/test.sh --packages-only
	$(BIN)/pip install -e '.[all,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lineguard demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile.edge

typecheck: $(STAMP)
	$(BIN)/mypy -p lineguard
	$(BIN)/mypy tests

# The whole suite with its real peers (Mosquitto, Prometheus, Label Studio); nothing may skip.
pytest: $(STAMP)
	scripts/test.sh $(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
