"""Hot swap at the edge: a new model is fetched, verified and warmed up, or refused with a reason."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from support.mosquitto import Broker
from support.mqtt import Subscriber, subscribed, wait_until
from support.signal_model import build_signal_onnx

from lineguard.config import CameraConfig, LineguardConfig, MqttConfig, SwapGuardConfig
from lineguard.edge import EdgeDaemon, ModelFollower, SwapGuard, prepare_model
from lineguard.edge.control import parse_control
from lineguard.edge.sources import FolderSource
from lineguard.errors import ModelError
from lineguard.messages import (
    DesiredModel,
    ModelCard,
    ModelRef,
    Reason,
    Verdict,
    VerdictKind,
    card_url_for,
    sha256_file,
)
from lineguard.registry import ArtifactServer, Registry, Stage, desired_payload, publish_model
from lineguard.releases import Signer, generate_keypair
from lineguard.synthetic import CLASSES, render_unit

TOKEN = "edge-test-token-0123456789"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hot_swap_models")
    build_signal_onnx(root / "v1", version="1.0.0", contrast=0.45)
    build_signal_onnx(root / "v2", version="2.0.0", contrast=0.19)
    build_signal_onnx(root / "classes", name="signal", version="9.0.0", classes=("dent", "scratch"))
    junk = root / "junk"
    junk.mkdir()
    (junk / "model.onnx").write_bytes(b"this is a PNG, not an ONNX graph" * 10)
    ModelCard(
        name="signal",
        version="7.0.0",
        sha256=sha256_file(junk / "model.onnx"),
        classes=list(CLASSES),
        input_size=160,
        thresholds={},
    ).save(junk / "model_card.json")
    return {"v1": root / "v1", "v2": root / "v2", "classes": root / "classes", "junk": root / "junk"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    """The registry's signing key and the public key file its stations pin."""
    private, public = generate_keypair(tmp_path_factory.mktemp("registry_keys"))
    return Signer.from_file(private), public


@pytest.fixture
def registry(tmp_path: Path, model_dirs: dict[str, Path]) -> Registry:
    reg = Registry(tmp_path / "registry")
    for folder in model_dirs.values():
        reg.add(folder)
    return reg


@pytest.fixture
def cfg(tmp_path: Path, registry: Registry) -> LineguardConfig:
    return LineguardConfig.model_validate(
        {"station": {"data_dir": str(tmp_path / "station")}, "registry": {"root": str(registry.root)}}
    )


def _desired(
    registry: Registry, version: str, public_url: str = "", signer: Signer | None = None
) -> DesiredModel:
    mv = registry.get("signal", version)
    return parse_control(DesiredModel, desired_payload(registry, mv, public_url, signer))


def test_prepared_model_is_downloaded_verified_and_ready(registry: Registry, cfg: LineguardConfig) -> None:
    desired = _desired(registry, "2.0.0")
    with prepare_model(desired, cfg, expected_classes=CLASSES) as detector:
        assert detector.card.ref == "signal:2.0.0"
        folder = cfg.station.data_dir / "models" / desired.sha256
        assert sha256_file(folder / "model.onnx") == desired.sha256
        assert ModelCard.load(folder / "model_card.json").version == "2.0.0"
        unit = next(render_unit(11, i, imgsz=160) for i in range(50) if render_unit(11, i, imgsz=160).labels)
        dets, _ = detector.detect(unit.image)
        assert len(dets) > 0


def test_corrupted_artifact_is_refused(registry: Registry, cfg: LineguardConfig) -> None:
    desired = _desired(registry, "2.0.0")
    blob = registry.blob_path(desired.sha256)
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")  # bit rot / tampering after publish
    with pytest.raises(
        ModelError, match=r"refused model signal:2.0.0: downloaded file has sha256 .* corrupted"
    ):
        prepare_model(desired, cfg)
    assert not (cfg.station.data_dir / "models" / desired.sha256 / "model.onnx").exists()


def test_model_with_other_classes_is_refused(registry: Registry, cfg: LineguardConfig) -> None:
    with pytest.raises(ModelError, match=r"classes \['dent', 'scratch'\] differ from the running model's"):
        prepare_model(_desired(registry, "9.0.0"), cfg, expected_classes=CLASSES)


def test_non_onnx_file_is_refused(registry: Registry, cfg: LineguardConfig) -> None:
    with pytest.raises(
        ModelError, match=r"refused model signal:7.0.0: (onnxruntime|OpenVINO) cannot load the model as ONNX"
    ):
        prepare_model(_desired(registry, "7.0.0"), cfg, expected_classes=CLASSES)


def test_old_model_keeps_working_after_a_refusal(registry: Registry, cfg: LineguardConfig) -> None:
    frame = render_unit(11, 0, imgsz=160).image
    with prepare_model(_desired(registry, "1.0.0"), cfg) as running:
        before, _ = running.detect(frame)
        with pytest.raises(ModelError):
            prepare_model(_desired(registry, "7.0.0"), cfg, expected_classes=running.card.classes)
        after, _ = running.detect(frame)
        assert running.card.version == "1.0.0"
        np.testing.assert_array_equal(after.xyxy, before.xyxy)
        np.testing.assert_array_equal(after.confidence, before.confidence)


def test_model_fetched_over_http_needs_the_token(
    registry: Registry, cfg: LineguardConfig, tmp_path: Path
) -> None:
    with ArtifactServer(registry, TOKEN) as server:
        cfg.registry.public_url = server.url
        desired = _desired(registry, "2.0.0", public_url=server.url)
        with pytest.raises(ModelError, match=r"401.*registry.token_file"):
            prepare_model(desired, cfg)
        (tmp_path / "token").write_text(TOKEN + "\n")
        cfg.registry.token_file = tmp_path / "token"
        with prepare_model(desired, cfg) as detector:
            assert detector.card.sha256 == desired.sha256


def test_golden_images_must_run(registry: Registry, cfg: LineguardConfig, tmp_path: Path) -> None:
    import cv2

    golden = tmp_path / "golden"
    golden.mkdir()
    with pytest.raises(ModelError, match=r"golden images failed: golden folder .* holds no images"):
        prepare_model(_desired(registry, "2.0.0"), cfg, golden_dir=golden)
    for i in range(3):
        cv2.imwrite(str(golden / f"g{i}.png"), render_unit(5, i, imgsz=200).image)
    with prepare_model(_desired(registry, "2.0.0"), cfg, golden_dir=golden) as passed:
        assert passed.card.version == "2.0.0"  # clean golden images let the model through


@pytest.mark.parametrize(
    ("url", "card"),
    [
        ("file:///srv/reg/blobs/" + "a" * 64, "file:///srv/reg/cards/m/1.2.json"),
        ("http://reg:8081/v1/artifacts/" + "a" * 64, "http://reg:8081/v1/cards/m/1.2.json"),
    ],
)
def test_card_sits_beside_the_artifact(url: str, card: str) -> None:
    assert card_url_for(url, "m", "1.2") == card


def _verdict(seq: int, kind: VerdictKind, reason: Reason, sha: str) -> Verdict:
    now = datetime.now(UTC)
    return Verdict(
        seq=seq,
        unit_id=f"u{seq}",
        line="l",
        station="s",
        verdict=kind,
        reason=reason,
        model=ModelRef(name="m", version="v", sha256=sha),
        thresholds="t",
        captured_at=now,
        decided_at=now,
        latency_ms=1.0,
    )


OLD, NEW = "a" * 64, "b" * 64
GUARD = SwapGuardConfig(window_units=50, min_units=10)


@pytest.mark.parametrize(
    ("after", "rollback", "reason"),
    [
        ([], None, ""),
        ([(VerdictKind.PASS, Reason.NO_DEFECT)] * 50, False, ""),
        ([(VerdictKind.NO_DECISION, Reason.UNCERTAIN)] * 10, True, "NO_DECISION rate 100.0% vs 10.0%"),
        (
            [(VerdictKind.PASS, Reason.NO_DEFECT)] * 9 + [(VerdictKind.NO_DECISION, Reason.ERROR)],
            True,
            "error rate",
        ),
        (
            [(VerdictKind.PASS, Reason.NO_DEFECT)] * 19 + [(VerdictKind.NO_DECISION, Reason.DEADLINE)],
            None,
            "",
        ),
        (
            [(VerdictKind.NO_DECISION, Reason.DEADLINE)] * 2 + [(VerdictKind.FAIL, Reason.DEFECT)] * 8,
            True,
            "deadline",
        ),
    ],
)
def test_swap_guard_calls_for_rollback_beyond_bounds(
    after: list[tuple[VerdictKind, Reason]], rollback: bool | None, reason: str
) -> None:
    guard = SwapGuard(GUARD)
    baseline = [(VerdictKind.NO_DECISION, Reason.UNCERTAIN)] * 3 + [(VerdictKind.PASS, Reason.NO_DEFECT)] * 27
    checks = [guard.observe(_verdict(i + 1, k, r, OLD)) for i, (k, r) in enumerate(baseline)]
    guard.swapped(NEW)
    assert guard.watching
    checks += [guard.observe(_verdict(i + 100, k, r, NEW)) for i, (k, r) in enumerate(after)]
    found = [c for c in checks if c is not None]
    if rollback is None:
        assert found == []
        return
    assert len(found) == 1
    assert found[0].rollback is rollback
    assert reason in found[0].reason
    assert not guard.watching


def test_swap_guard_ignores_verdicts_of_the_old_model() -> None:
    guard = SwapGuard(GUARD)
    guard.swapped(NEW)
    late = [guard.observe(_verdict(i, VerdictKind.NO_DECISION, Reason.ERROR, OLD)) for i in range(1, 30)]
    assert late == [None] * 29 and guard.watching


def test_cached_download_is_reused(registry: Registry, cfg: LineguardConfig) -> None:
    desired = _desired(registry, "2.0.0")
    prepare_model(desired, cfg).close()
    shutil.copyfile(
        registry.blob_path(desired.sha256), registry.blob_path(desired.sha256).with_suffix(".bak")
    )
    registry.blob_path(desired.sha256).unlink()  # the registry copy is gone; the station's copy serves
    with prepare_model(desired, cfg) as again:
        assert (again.card.version, again.card.sha256) == ("2.0.0", desired.sha256)
    assert not registry.blob_path(desired.sha256).exists()  # nothing was fetched back into place


# -- end to end: registry -> retained message -> follower -> daemon ------------------------------


@dataclass
class _Line:
    daemon: EdgeDaemon
    follower: ModelFollower
    sub: Subscriber
    thread: threading.Thread

    @property
    def verdicts(self) -> dict[int, Verdict]:
        """Verdicts received on MQTT, by seq (a replayed duplicate counts once)."""
        out: dict[int, Verdict] = {}
        for payload in self.sub.payloads():
            verdict = Verdict.model_validate(payload)
            out.setdefault(verdict.seq, verdict)
        return out


@pytest.fixture
def line(
    registry: Registry, broker: Broker, tmp_path: Path, keys: tuple[Signer, Path]
) -> Iterator[Callable[[int], _Line]]:
    """A station on the synthetic line that follows ``signal`` through the registry's signed rollouts."""
    started: list[tuple[_Line, Subscriber]] = []
    signer, public = keys

    def start(units: int) -> _Line:
        registry.follow("line1", "st1", "signal")
        registry.promote("signal", "1.0.0", Stage.PRODUCTION)
        _publish(registry, broker, signer)
        cfg = LineguardConfig.model_validate(
            {
                "station": {"line": "line1", "station": "st1", "data_dir": str(tmp_path / "station")},
                "camera": {"kind": "synthetic", "fps": 40, "synthetic_imgsz": 160, "synthetic_seed": 3},
                "model": {"threads": 1, "warmup_runs": 1},
                "mqtt": {"host": broker.host, "port": broker.port},
                "http": {"enabled": False},
                "registry": {"root": str(registry.root), "public_keys": [str(public)]},
            }
        )
        first = prepare_model(_desired(registry, "1.0.0", signer=signer), cfg)  # what runs at start
        cfg.model.path = first.model_path
        first.close()
        daemon = EdgeDaemon(cfg)  # follows lineguard/line1/st1/model through its own MQTT link
        sub = Subscriber(broker.host, broker.port, "lineguard/line1/st1/verdict").start()
        thread = threading.Thread(target=daemon.run, kwargs={"max_units": units}, daemon=True)
        thread.start()
        running = _Line(daemon, daemon.follower, sub, thread)
        started.append((running, sub))
        return running

    yield start
    for running, sub in started:
        running.daemon.stop()
        running.thread.join(30)
        sub.stop()


def _publish(registry: Registry, broker: Broker, signer: Signer) -> None:
    publish_model(registry, "signal", MqttConfig(host=broker.host, port=broker.port), signer=signer)


def _versions_by_seq(verdicts: dict[int, Verdict]) -> list[str]:
    models = [verdicts[s].model for s in sorted(verdicts)]
    return [m.version if m is not None else "-" for m in models]


@pytest.mark.slow
def test_promotion_mid_stream_swaps_between_two_units(
    registry: Registry, broker: Broker, line: Callable[[int], _Line], keys: tuple[Signer, Path]
) -> None:
    station = line(300)
    wait_until(lambda: station.daemon.summary.units >= 150, 60, "150 units")
    registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="e2e: promotion at unit 150")
    _publish(registry, broker, keys[0])
    station.thread.join(90)
    wait_until(lambda: len(station.verdicts) >= 300, 30, "300 verdicts on MQTT")

    assert sorted(station.verdicts) == list(range(1, 301))  # 300 verdicts, no seq gap
    versions = _versions_by_seq(station.verdicts)
    changes = [i for i in range(1, 300) if versions[i] != versions[i - 1]]
    assert len(changes) == 1, f"model changed at {changes}"
    boundary = changes[0]
    assert versions[:boundary] == ["1.0.0"] * boundary and set(versions[boundary:]) == {"2.0.0"}
    assert boundary >= 150
    around = [station.verdicts[s] for s in range(max(1, boundary - 25), min(300, boundary + 25) + 1)]
    latencies = sorted(v.latency_ms for v in around)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"swap at seq {boundary + 1}: p99 latency of the 51 units around it {p99:.1f} ms")
    assert p99 <= station.daemon.cfg.policy.deadline_ms
    assert not [v for v in around if v.reason is Reason.DEADLINE]
    assert station.follower.refusals == []


@pytest.mark.slow
def test_rollback_restores_the_previous_model_at_the_edge(
    registry: Registry, broker: Broker, line: Callable[[int], _Line], keys: tuple[Signer, Path]
) -> None:
    station = line(400)
    wait_until(lambda: station.daemon.summary.units >= 20, 30, "20 units")
    registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="e2e")
    _publish(registry, broker, keys[0])
    wait_until(lambda: _versions_by_seq(station.verdicts)[-1:] == ["2.0.0"], 30, "the new model in use")
    registry.rollback("signal", why="e2e rollback")
    _publish(registry, broker, keys[0])
    wait_until(lambda: _versions_by_seq(station.verdicts)[-1:] == ["1.0.0"], 30, "the old model back")
    station.daemon.stop()
    station.thread.join(30)

    versions = _versions_by_seq(station.verdicts)
    runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert runs == ["1.0.0", "2.0.0", "1.0.0"]


def test_refused_model_keeps_the_running_one_in_the_daemon(
    registry: Registry, broker: Broker, line: Callable[[int], _Line], keys: tuple[Signer, Path]
) -> None:
    station = line(400)
    wait_until(lambda: station.daemon.summary.units >= 10, 30, "10 units")
    with subscribed(broker.host, broker.port, "lineguard/line1/st1/alert") as alerts:
        station.follower.submit(_desired(registry, "9.0.0", signer=keys[0]))  # other classes
        assert station.follower.wait_idle(30)
        wait_until(lambda: alerts.payloads(), 10, "the alert")
    assert alerts.payloads()[0]["kind"] == "model_refused"
    assert "differ from the running model's" in json.dumps(alerts.payloads()[0])
    before = station.daemon.summary.units
    wait_until(lambda: station.daemon.summary.units >= before + 10, 30, "10 more units")
    station.daemon.stop()
    station.thread.join(30)
    assert (
        len(station.follower.refusals) == 1
        and "differ from the running model's" in station.follower.refusals[0]
    )
    assert set(_versions_by_seq(station.verdicts)) == {"1.0.0"}


def test_station_follows_a_model_by_configuration_alone(
    registry: Registry, broker: Broker, tmp_path: Path, keys: tuple[Signer, Path]
) -> None:
    """``registry.follow: signal`` and nothing else: no model at start, no ``registry follow`` row."""
    signer, public = keys
    cfg = LineguardConfig.model_validate(
        {
            "station": {"line": "line7", "station": "st7", "data_dir": str(tmp_path / "station")},
            "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
            "model": {"threads": 1, "warmup_runs": 1},
            "mqtt": {"host": broker.host, "port": broker.port},
            "http": {"enabled": False},
            "registry": {"root": str(registry.root), "follow": "signal", "public_keys": [str(public)]},
        }
    )
    assert registry.stations("signal") == []
    daemon = EdgeDaemon(cfg)

    def running() -> str | None:
        slot = daemon.slot
        return None if slot is None else slot.ref.version

    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.summary.units >= 3, 30, "units without a model")
        assert running() is None
        registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="follow by config")
        _publish(registry, broker, signer)
        wait_until(lambda: running() == "2.0.0", 30, "the followed model in the slot")
    finally:
        daemon.stop()
        thread.join(30)


class _HeldAtLastFile(FolderSource):
    """The real folder camera, except that its last file waits until the test lets it through."""

    def __init__(self, cfg: CameraConfig, release: threading.Event) -> None:
        super().__init__(cfg)
        self._release = release

    def _grab(self, buf: npt.NDArray[np.uint8] | None) -> npt.NDArray[np.uint8] | None:
        if self._pos == len(self._files) - 1:
            self._release.wait(60)
        return super()._grab(buf)


def test_folder_through_a_rollout_mid_run_gives_every_file_one_verdict_naming_it(
    registry: Registry, broker: Broker, tmp_path: Path, keys: tuple[Signer, Path]
) -> None:
    signer, public = keys
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"part-{i:02d}.png" for i in range(11)] + ["part-11 rework.png"]
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), render_unit(5, i, imgsz=160).image)
    registry.follow("line1", "st1", "signal")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    cfg = LineguardConfig.model_validate(
        {
            "station": {"line": "line1", "station": "st1", "data_dir": str(tmp_path / "station")},
            "camera": {"kind": "folder", "uri": str(folder), "fps": 30},
            "model": {"threads": 1, "warmup_runs": 1},  # no model.path: it arrives by rollout
            "mqtt": {"host": broker.host, "port": broker.port},
            "http": {"enabled": False},
            "registry": {"root": str(registry.root), "public_keys": [str(public)]},
        }
    )
    release = threading.Event()
    daemon = EdgeDaemon(cfg, source=_HeldAtLastFile(cfg.camera, release))
    with subscribed(broker.host, broker.port, "lineguard/line1/st1/verdict") as sub:
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(sub.payloads()) >= 1, 30, "the first verdict")
            _publish(registry, broker, signer)  # the rollout, while files flow
            wait_until(lambda: daemon.slot is not None, 60, "the rolled-out model in use")
        finally:
            release.set()
            thread.join(60)
        wait_until(lambda: len(sub.payloads()) >= len(names), 30, "a verdict per file")
        got = sorted((Verdict.model_validate(p) for p in sub.payloads()), key=lambda v: v.seq)

    assert [v.seq for v in got] == list(range(1, len(names) + 1))  # one per file: none lost, none twice
    assert [v.unit_id for v in got] == [f"st1-part-{i:02d}" for i in range(11)] + [
        "st1-part-11_rework-i000011"
    ]
    assert [(v.source.file, v.source.index) for v in got if v.source] == [(n, i) for i, n in enumerate(names)]
    assert {v.source.camera for v in got if v.source} == {f"folder:{folder}"}
    models = [v.model.version if v.model else None for v in got]
    first = models.index("1.0.0")
    assert first > 0 and models == [None] * first + ["1.0.0"] * (len(names) - first)
    assert {(v.verdict, v.reason) for v in got[:first]} == {(VerdictKind.NO_DECISION, Reason.NO_MODEL)}
    assert daemon.summary.line().endswith("; 0 frames skipped; last seq 12, 0 undelivered")
