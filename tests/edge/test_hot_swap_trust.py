"""Trusting the model channel: a station runs only what its registry signed, fetched from its registry.

Each attack of issue #16 against the real registry store, the real artifact server, a small
recording HTTP server and (at the end) a real daemon on Mosquitto: refused with a reason, the
registry token never leaves for another host, and the old model keeps running.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.mosquitto import Broker
from support.mqtt import Subscriber, subscribed, wait_until
from support.signal_model import build_signal_onnx

from lineguard.config import LineguardConfig, MqttConfig
from lineguard.edge import EdgeDaemon, prepare_model
from lineguard.edge.control import parse_control
from lineguard.errors import ModelError
from lineguard.inference import VerdictPolicy
from lineguard.messages import DesiredModel, ModelCard, Verdict
from lineguard.registry import ArtifactServer, Registry, Stage, desired_payload, publish_model
from lineguard.releases import Signer, generate_keypair

TOKEN = "trust-test-token-0123456789"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trust_models")
    build_signal_onnx(root / "v1", version="1.0.0", contrast=0.45)
    build_signal_onnx(root / "v2", version="2.0.0", contrast=0.19)
    return {"v1": root / "v1", "v2": root / "v2"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Signer, Path]]:
    """The registry's key pair and a stranger's."""
    out = {}
    for who in ("registry", "stranger"):
        private, public = generate_keypair(tmp_path_factory.mktemp(f"{who}_keys"))
        out[who] = (Signer.from_file(private), public)
    return out


@pytest.fixture
def registry(tmp_path: Path, model_dirs: dict[str, Path]) -> Registry:
    reg = Registry(tmp_path / "registry")
    for folder in model_dirs.values():
        reg.add(folder)
    return reg


@pytest.fixture
def cfg(tmp_path: Path, registry: Registry, keys: dict[str, tuple[Signer, Path]]) -> LineguardConfig:
    """A station that pins the registry's key and fetches from the registry folder."""
    return LineguardConfig.model_validate(
        {
            "station": {"data_dir": str(tmp_path / "station")},
            "model": {"threads": 1, "warmup_runs": 1},
            "registry": {"root": str(registry.root), "public_keys": [str(keys["registry"][1])]},
        }
    )


def _signed(registry: Registry, version: str, signer: Signer | None, public_url: str = "") -> DesiredModel:
    mv = registry.get("signal", version)
    return parse_control(DesiredModel, desired_payload(registry, mv, public_url, signer))


class _Recorder(BaseHTTPRequestHandler):
    """Records every request's headers; ``/endless`` streams zeros forever, anything else is 404."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        if self.path.startswith("/v1/artifacts/"):
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                return
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A tiny HTTP server on a free port: its base URL and the headers of every request it got."""
    handler: type[_Recorder] = type("Recorder", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()


def test_signed_release_is_accepted(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]]
) -> None:
    desired = _signed(registry, "2.0.0", keys["registry"][0])
    assert desired.release is not None and desired.release.key_id == keys["registry"][0].key_id
    with prepare_model(desired, cfg) as detector:
        assert detector.card.ref == "signal:2.0.0"


def test_unsigned_message_is_refused_when_a_key_is_pinned(registry: Registry, cfg: LineguardConfig) -> None:
    with pytest.raises(ModelError, match=r"refused model signal:2.0.0: the message is not signed"):
        prepare_model(_signed(registry, "2.0.0", None), cfg)


def test_release_signed_by_another_key_is_refused(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]]
) -> None:
    stranger = keys["stranger"][0]
    with pytest.raises(ModelError, match=rf"signed by key {stranger.key_id}, which is not among the pinned"):
        prepare_model(_signed(registry, "2.0.0", stranger), cfg)


def test_forged_signature_and_swapped_release_are_refused(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]]
) -> None:
    genuine = _signed(registry, "1.0.0", keys["registry"][0])
    other = _signed(registry, "2.0.0", keys["registry"][0])
    assert genuine.release is not None and other.release is not None
    forged = genuine.model_copy(update={"release": genuine.release.model_copy(update={"stage": "staging"})})
    with pytest.raises(ModelError, match=r"signature does not verify"):
        prepare_model(forged, cfg)
    replayed = other.model_copy(update={"release": genuine.release, "signature": genuine.signature})
    with pytest.raises(ModelError, match=r"the signed release is for signal:1.0.0, not for the model"):
        prepare_model(replayed, cfg)


def test_card_with_raised_thresholds_is_refused_and_changes_thresholds_id(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]]
) -> None:
    desired = _signed(registry, "2.0.0", keys["registry"][0])
    card_file = registry.card_path("signal", "2.0.0")
    card = ModelCard.load(card_file)
    raised = card.model_copy(update={"thresholds": dict.fromkeys(card.classes, 0.99)})
    raised.save(card_file)  # tampered after the registry signed the release
    with pytest.raises(ModelError, match=r"its card \(sha256 .*\) differs from the signed one"):
        prepare_model(desired, cfg)
    assert VerdictPolicy(raised, cfg.policy).thresholds_id != VerdictPolicy(card, cfg.policy).thresholds_id


@pytest.mark.parametrize(
    ("name", "version"),
    [("../../etc", "1.0.0"), ("signal", "../1.0.0"), ("signal", "1.0.0\n"), ("sig/nal", "1.0.0")],
)
def test_name_or_version_outside_the_pattern_is_refused(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]], name: str, version: str
) -> None:
    desired = _signed(registry, "2.0.0", keys["registry"][0]).model_copy(
        update={"name": name, "version": version}
    )
    with pytest.raises(ModelError, match=r"name and version must be letters, digits"):
        prepare_model(desired, cfg)
    assert not (cfg.station.data_dir / "models").exists()


def test_file_url_outside_the_registry_is_refused_without_reading_it(
    registry: Registry, cfg: LineguardConfig, keys: dict[str, tuple[Signer, Path]], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-contents")
    desired = _signed(registry, "2.0.0", keys["registry"][0]).model_copy(update={"url": secret.as_uri()})
    with pytest.raises(ModelError, match=r"file:// URL outside registry.root is refused") as info:
        prepare_model(desired, cfg)
    assert "s3cr3t" not in str(info.value)


def test_url_on_another_host_is_refused_and_never_gets_the_token(
    registry: Registry,
    cfg: LineguardConfig,
    keys: dict[str, tuple[Signer, Path]],
    tmp_path: Path,
    recorder: tuple[str, list[dict[str, str]]],
) -> None:
    elsewhere, seen = recorder
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg.registry.token_file = tmp_path / "token"
    signer = keys["registry"][0]
    with ArtifactServer(registry, TOKEN) as server:
        cfg.registry.public_url = server.url
        stolen = _signed(registry, "2.0.0", signer, public_url=elsewhere)
        with pytest.raises(ModelError, match=r"is not under the configured registry"):
            prepare_model(stolen, cfg)
        assert seen == []  # not even a connection: the token never left for another host
        with prepare_model(_signed(registry, "2.0.0", signer, public_url=server.url), cfg) as detector:
            assert detector.card.ref == "signal:2.0.0"  # the registry itself still serves


def test_endless_stream_stops_at_the_size_limit(
    registry: Registry, tmp_path: Path, recorder: tuple[str, list[dict[str, str]]]
) -> None:
    base, seen = recorder
    cfg = LineguardConfig.model_validate(
        {
            "station": {"data_dir": str(tmp_path / "station")},
            "registry": {"public_url": base, "max_model_bytes": 1 << 20, "fetch_timeout_s": 20},
        }
    )
    desired = _signed(registry, "2.0.0", None, public_url=base)  # development: no key pinned
    with pytest.raises(ModelError, match=r"over the 1048576 byte limit"):
        prepare_model(desired, cfg)
    assert len(seen) == 1
    assert not list((cfg.station.data_dir / "models").rglob("*.part"))


def test_hostile_model_messages_alert_and_the_old_model_keeps_running(
    registry: Registry,
    broker: Broker,
    tmp_path: Path,
    keys: dict[str, tuple[Signer, Path]],
    cfg: LineguardConfig,
) -> None:
    signer, stranger = keys["registry"][0], keys["stranger"][0]
    registry.follow("line1", "st1", "signal")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    mqtt_cfg = MqttConfig(host=broker.host, port=broker.port)
    publish_model(registry, "signal", mqtt_cfg, signer=signer)
    cfg.station.line, cfg.station.station = "line1", "st1"
    cfg.camera.kind, cfg.camera.fps, cfg.camera.synthetic_imgsz = "synthetic", 40, 160
    cfg.mqtt.host, cfg.mqtt.port = broker.host, broker.port
    cfg.http.enabled = False
    first = prepare_model(_signed(registry, "1.0.0", signer), cfg)
    cfg.model.path = first.model_path
    first.close()
    daemon = EdgeDaemon(cfg)
    verdicts = Subscriber(broker.host, broker.port, "lineguard/line1/st1/verdict").start()
    thread = threading.Thread(target=daemon.run, kwargs={"max_units": 2000}, daemon=True)
    thread.start()
    hostile = [
        _signed(registry, "2.0.0", None),  # unsigned
        _signed(registry, "2.0.0", stranger),  # another key
        _signed(registry, "2.0.0", signer).model_copy(update={"name": "../../etc"}),
    ]
    try:
        wait_until(lambda: daemon.summary.units >= 5, 30, "5 units")
        with subscribed(broker.host, broker.port, "lineguard/line1/st1/alert") as alerts:
            for desired in hostile:
                daemon.follower.submit(desired)
                assert daemon.follower.wait_idle(30)
            wait_until(lambda: len(alerts.payloads()) >= 3, 10, "three alerts")
            raw = [json.dumps(p) for p in alerts.payloads()]
        before = daemon.summary.units
        wait_until(lambda: daemon.summary.units >= before + 5, 30, "5 more units")
    finally:
        daemon.stop()
        thread.join(30)
        verdicts.stop()
    assert [p["kind"] for p in map(json.loads, raw)] == ["model_refused"] * 3
    assert all(len(r) < 4096 for r in raw)
    assert "not signed" in raw[0] and "not among the pinned" in raw[1] and "name and version must" in raw[2]
    models = {Verdict.model_validate(p).model.version for p in verdicts.payloads()}  # type: ignore[union-attr]
    assert models == {"1.0.0"}
