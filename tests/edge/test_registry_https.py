"""A station fetches a signed release over https from ``lineguard registry serve`` with a private CA.

The real CLI server runs in its own process with a certificate from a throw-away CA (the same
``make_pki`` the Mosquitto TLS tests use); the station trusts that CA through
``registry.ca_file`` and refuses a server its CA did not sign, with one line naming the key.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from support.mosquitto import free_port
from support.signal_model import build_signal_onnx
from support.tls import Pki, make_pki

from lineguard.config import LineguardConfig
from lineguard.edge import prepare_model
from lineguard.edge.control import parse_control
from lineguard.edge.doctor import run_checks
from lineguard.errors import ConfigError, ModelError
from lineguard.messages import DesiredModel
from lineguard.registry import Registry, desired_payload
from lineguard.registry.server import server_config
from lineguard.releases import Signer, generate_keypair

TOKEN = "https-test-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    private, public = generate_keypair(tmp_path_factory.mktemp("keys"))
    return Signer.from_file(private), public


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("https_registry")
    build_signal_onnx(root / "v2", version="2.0.0", contrast=0.19)
    reg = Registry(root / "registry")
    reg.add(root / "v2")
    return reg


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, registry: Registry, pki: Pki) -> Iterator[str]:
    """``lineguard registry serve --tls-cert --tls-key`` in its own process; its https base URL."""
    work = tmp_path_factory.mktemp("serve")
    token_file = work / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    command = [
        sys.executable, "-m", "lineguard.cli", "registry", "--root", str(registry.root), "serve",
        "--port", str(port), "--token-file", str(token_file),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
    ]  # fmt: skip
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=pki.ca_cert)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"registry serve did not answer over https: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _station(tmp_path: Path, url: str, ca_file: Path | None, public_key: Path) -> LineguardConfig:
    token_file = tmp_path / "registry.token"
    token_file.write_text(TOKEN)
    return LineguardConfig.model_validate(
        {
            "station": {"data_dir": str(tmp_path / "station"), "profile": "production"},
            "mqtt": {"enabled": False},
            "http": {"enabled": False},
            "model": {"threads": 1, "warmup_runs": 1},
            "registry": {
                "public_url": url,
                "token_file": str(token_file),
                "public_keys": [str(public_key)],
                "ca_file": None if ca_file is None else str(ca_file),
            },
        }
    )


def _release(registry: Registry, url: str, signer: Signer) -> DesiredModel:
    mv = registry.get("signal", "2.0.0")
    return parse_control(DesiredModel, desired_payload(registry, mv, url, signer))


def test_signed_release_is_fetched_over_https_with_the_private_ca(
    tmp_path: Path, registry: Registry, served: str, pki: Pki, signing: tuple[Signer, Path]
) -> None:
    desired = _release(registry, served, signing[0])
    assert desired.url.startswith("https://127.0.0.1:")
    with prepare_model(desired, _station(tmp_path, served, pki.ca_cert, signing[1])) as detector:
        assert detector.card.ref == "signal:2.0.0"


@pytest.mark.parametrize("which", ["another CA", "system CAs"])
def test_a_server_the_ca_did_not_sign_is_refused_naming_ca_file(
    tmp_path: Path, registry: Registry, served: str, signing: tuple[Signer, Path], which: str
) -> None:
    ca_file = make_pki(tmp_path / "other", "someone else's CA").ca_cert if which == "another CA" else None
    cfg = _station(tmp_path, served, ca_file, signing[1])
    with pytest.raises(ModelError) as refused:
        prepare_model(_release(registry, served, signing[0]), cfg)
    message = str(refused.value)
    assert "registry.ca_file" in message and "certificate" in message
    assert "\n" not in message
    folder = cfg.station.data_dir / "models" / registry.get("signal", "2.0.0").sha256
    assert not (folder / "model.onnx").exists()


def test_a_missing_ca_file_is_one_line_naming_the_key(
    tmp_path: Path, registry: Registry, served: str, signing: tuple[Signer, Path]
) -> None:
    cfg = _station(tmp_path, served, tmp_path / "nope.crt", signing[1])
    with pytest.raises(ModelError, match=r"^registry\.ca_file: file not found: .*nope\.crt; fix the path$"):
        prepare_model(_release(registry, served, signing[0]), cfg)


def test_https_needs_both_certificate_and_key(registry: Registry, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        server_config(registry, TOKEN, "127.0.0.1", 0, tls_cert=pki.server_cert)
    with pytest.raises(ConfigError, match=r"--tls-key .* is not a file"):
        server_config(registry, TOKEN, "127.0.0.1", 0, pki.server_cert, tmp_path / "missing.key")


def test_doctor_checks_the_registry_as_the_station_will(tmp_path: Path, served: str, pki: Pki) -> None:
    """Token and CA are what a fetch needs; doctor says which one is wrong before a rollout does."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)

    def check(**registry: object) -> tuple[bool, str, str]:
        config = tmp_path / "station.yaml"
        settings = {"public_url": served, "token_file": str(token_file), **registry}
        config.write_text(yaml.safe_dump({"mqtt": {"enabled": False}, "registry": settings}))
        found = {c.name: (c.ok, c.detail, c.fix) for c in run_checks(config, timeout_s=5.0)}
        return found["registry"]

    ok, detail, _ = check(ca_file=str(pki.ca_cert))
    assert ok and "accepts the token" in detail
    ok, _, fix = check()  # the system CAs do not know the test CA
    assert not ok and "registry.ca_file" in fix
    token_file.write_text("wrong-token-0123456789")
    ok, detail, fix = check(ca_file=str(pki.ca_cert))
    assert not ok and "(401)" in detail and "registry.token_file" in detail
