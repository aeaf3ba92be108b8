"""Fixtures shared by every part's tests: a synthetic dataset, a tiny ONNX model, a broker.

Session-scoped fixtures are built once into pytest's cache-free temp folder, so the whole suite
pays for one dataset and one model export.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.label_studio import LabelStudioInfo, require_label_studio
from support.mosquitto import Broker

if TYPE_CHECKING:
    from lineguard.edge import EdgeDaemon

# Ultralytics and albumentations must never reach the network from a test.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``make test`` (LINEGUARD_REQUIRE_ALL=1) a skipped test fails the run: whole or red."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if (
        reporter is not None
        and os.environ.get("LINEGUARD_REQUIRE_ALL") == "1"
        and skipped
        and exitstatus == 0
    ):
        reporter.write_line(f"{skipped} test(s) skipped; make test runs them all (-ra lists them)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """``edge run`` in-process puts its JSON handler on the root logger; later tests must not log into it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep ultralytics settings and fonts out of the user's home during tests."""
    os.environ.setdefault("LINEGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``model.onnx`` (random-weight YOLOv8n, 4 classes, 160 px) + ``model_card.json``."""
    from support.models import build_random_yolo_onnx

    out = tmp_path_factory.mktemp("tiny_model")
    build_random_yolo_onnx(out)
    return out


@pytest.fixture(scope="session")
def lively_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ultralytics-exported random YOLOv8n (160 px) whose boxes depend on the image, with its ``model.pt``.

    Plain random weights score every anchor alike; agreement tests with ultralytics need real boxes.
    """
    from lineguard.benchmarks.models import build_random_yolo_onnx

    return build_random_yolo_onnx(tmp_path_factory.mktemp("lively"), imgsz=160, lively=True)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-image synthetic YOLO dataset version (seed 7, 160 px) with its manifest and video."""
    from lineguard.training.synthetic_dataset import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth") / "ds"
    write_synthetic_dataset(out, images=48, seed=7, imgsz=160)
    return out


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of this test's own on a free port; the test may stop and start it."""
    server = Broker(tmp_path / "broker").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio() -> LabelStudioInfo:
    """The Label Studio at LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY; skipped when absent (CI: fails)."""
    return require_label_studio()


@pytest.fixture
def background() -> Iterator[Callable[[EdgeDaemon], threading.Thread]]:
    """Run daemons on threads; each is stopped and joined at the end of the test."""
    started: list[tuple[EdgeDaemon, threading.Thread]] = []

    def run(daemon: EdgeDaemon) -> threading.Thread:
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        started.append((daemon, thread))
        return thread

    yield run
    for daemon, thread in started:
        daemon.stop()
        thread.join(20)
