"""A station's image-quality gate fits the line its model was trained on, and says so beforehand.

The glossy synthetic line has good units up to a mean gray near 246: a fixed 235 turns some of them
into NO_DECISION/image_quality. With default settings the bounds follow the model card, so the
station passes its own training frames; ``edge check`` and ``doctor`` count what the gate would
reject on sample frames.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lineguard.cli import main
from lineguard.config import LineguardConfig, load_config
from lineguard.edge.daemon import EdgeDaemon
from lineguard.edge.doctor import run_checks
from lineguard.edge.quality_screen import screen_station
from lineguard.edge.sources import Frame
from lineguard.inference import Detector, QualityGate, read_image_file
from lineguard.messages import ModelCard, Reason, Verdict
from lineguard.training import image_reference
from lineguard.training.synthetic_dataset import write_synthetic_dataset


@pytest.fixture(scope="module")
def glossy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The glossy line as a dataset version: 150 train and 50 val images at 96 px."""
    out = tmp_path_factory.mktemp("glossy") / "ds"
    write_synthetic_dataset(out, images=200, seed=5, imgsz=96, condition="glossy", video_frames=0)
    return out


@pytest.fixture(scope="module")
def glossy_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, glossy: Path) -> Path:
    """The tiny model with a card whose reference was measured on the glossy line, as export does."""
    folder = tmp_path_factory.mktemp("glossy_model") / "model"
    shutil.copytree(tiny_model, folder)
    card = ModelCard.load(folder / "model_card.json")
    card.reference = image_reference(glossy, "val")[0]
    card.save(folder / "model_card.json")
    return folder


def _station(tmp_path: Path, model: Path, frames: Path, **quality: float) -> LineguardConfig:
    overrides: dict[str, Any] = {
        "station": {"line": "l1", "station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": {"kind": "folder", "uri": str(frames), "fps": 60},
        "model": {"path": str(model / "model.onnx"), "threads": 1, "warmup_runs": 1},
        "policy": {"quality": quality},
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "jsonl_path": str(tmp_path / "verdicts.jsonl"),
    }
    return load_config(None, environ={}, overrides=overrides)


def _image_quality_share(tmp_path: Path, cfg: LineguardConfig) -> tuple[int, int]:
    EdgeDaemon(cfg).run()
    verdicts = [Verdict.from_json(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    return sum(v.reason == Reason.IMAGE_QUALITY for v in verdicts), len(verdicts)


def test_station_passes_its_training_frames_with_default_bounds(
    tmp_path: Path, glossy: Path, glossy_model: Path
) -> None:
    rejected, units = _image_quality_share(
        tmp_path, _station(tmp_path, glossy_model, glossy / "images" / "train")
    )
    assert units >= 100
    assert rejected <= 0.005 * units


def test_configured_bound_still_rejects_bright_frames(
    tmp_path: Path, glossy: Path, glossy_model: Path
) -> None:
    cfg = _station(tmp_path, glossy_model, glossy / "images" / "train", max_brightness=235.0)
    rejected, units = _image_quality_share(tmp_path, cfg)
    assert rejected >= 0.02 * units  # what the fixed default did before


def test_hot_swap_brings_the_new_models_bounds(
    tmp_path: Path, glossy: Path, glossy_model: Path, tiny_model: Path
) -> None:
    cfg = _station(tmp_path, glossy_model, glossy / "images" / "train")
    daemon = EdgeDaemon(cfg)
    gate = QualityGate(cfg.policy.quality, frozen_frames=1 << 30)
    bright = max(
        (read_image_file(p) for p in sorted((glossy / "images" / "train").iterdir())),
        key=lambda image: float(image.mean()),
    )

    def reason_with(model: Path) -> Reason:
        daemon.inspector.swap_model(Detector.for_station(model / "model.onnx", cfg))
        frame = Frame(bright, datetime.now(UTC), time.monotonic(), 0)
        return daemon.inspector.decide(frame, gate)[0].reason

    assert reason_with(tiny_model) == Reason.IMAGE_QUALITY  # its card has no reference: built-in 235
    assert reason_with(glossy_model) != Reason.IMAGE_QUALITY
    daemon.inspector.swap_model(None)


def test_edge_check_counts_the_sample_frames_the_gate_would_reject(
    tmp_path: Path, glossy: Path, glossy_model: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = glossy / "images" / "train"
    config = tmp_path / "station.yaml"
    config.write_text(f"model:\n  path: {glossy_model / 'model.onnx'}\nmqtt:\n  enabled: false\n")
    assert main(["edge", "check", "--config", str(config), "--frames", str(frames)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if " quality " in x)
    assert line.startswith("OK    quality    0 of 150 sample frames would be rejected as image_quality")
    assert "150 training frames" in line

    config.write_text(f"model:\n  path: {tiny_model / 'model.onnx'}\nmqtt:\n  enabled: false\n")
    assert main(["edge", "check", "--config", str(config), "--frames", str(frames)]) == 0  # a warning
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if " quality " in x)
    assert line.startswith("WARN  quality") and "of 150 sample frames would be rejected" in line
    assert "(too bright: " in line and "brightness 20..235" in line
    assert "fix: " in out


def test_doctor_screens_the_configured_image_folder(tmp_path: Path, glossy: Path, tiny_model: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text(
        f"model:\n  path: {tiny_model / 'model.onnx'}\n"
        f"camera:\n  kind: folder\n  uri: {glossy / 'images' / 'train'}\nmqtt:\n  enabled: false\n"
    )
    quality = next(c for c in run_checks(config, timeout_s=1.0) if c.name == "quality")
    assert not quality.ok and "too bright" in quality.detail and "retrain" in quality.fix
    empty = tmp_path / "empty"
    empty.mkdir()
    quality = next(c for c in run_checks(config, timeout_s=1.0, frames_dir=empty) if c.name == "quality")
    assert not quality.ok and "holds no image files" in quality.detail


def test_a_configured_video_is_screened_frame_by_frame(synthetic_dataset: Path) -> None:
    video = synthetic_dataset / "video" / "line.avi"
    cfg = load_config(None, environ={}, overrides={"camera": {"kind": "video", "uri": str(video)}})
    screen = screen_station(cfg, None, None, limit=20)
    assert screen.ok and screen.detail.startswith("0 of 20 sample frames would be rejected")
    assert f"20 frames spread over video '{video}'" in screen.detail
    missing = load_config(None, environ={}, overrides={"camera": {"kind": "video", "uri": str(video) + ".x"}})
    assert not screen_station(missing, None, None).ok
