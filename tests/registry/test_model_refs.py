"""``name@production`` stands where a model path does: in a station's config and on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineguard.cli import main
from lineguard.config import LineguardConfig
from lineguard.errors import InputError, ModelError
from lineguard.inference import Detector
from lineguard.messages import ModelCard, sha256_file
from lineguard.model_refs import resolve_model_path
from lineguard.registry import Registry, Stage


def _staged(registry: Registry, ref: str) -> tuple[str, str]:
    """(card version, ONNX sha256) of what ``models/signal/<ref>`` holds."""
    folder = registry.root / "models" / "signal" / ref
    return ModelCard.load(folder / "model_card.json").version, sha256_file(folder / "model.onnx")


def test_stage_folders_follow_promotion_and_rollback(registry: Registry, models: dict[str, Path]) -> None:
    weak, good = registry.add(models["weak"]), registry.add(models["good"])
    assert _staged(registry, "1.0.0") == ("1.0.0", weak.sha256)  # every version is a loadable folder
    assert not (registry.root / "models" / "signal" / "production").exists()

    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    registry.promote("signal", "2.0.0", Stage.STAGING)
    assert _staged(registry, "production") == ("1.0.0", weak.sha256)
    assert _staged(registry, "staging") == ("2.0.0", good.sha256)

    registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="test")
    assert _staged(registry, "production") == ("2.0.0", good.sha256)
    assert not (registry.root / "models" / "signal" / "staging").exists()
    registry.rollback("signal", why="test")
    assert _staged(registry, "production") == ("1.0.0", weak.sha256)


def test_station_config_loads_the_production_model_by_reference(
    registry: Registry, models: dict[str, Path]
) -> None:
    registry.add(models["weak"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    cfg = LineguardConfig.model_validate(
        {"model": {"path": "signal@production", "warmup_runs": 0}, "registry": {"root": str(registry.root)}}
    )
    assert cfg.model.path is not None
    with Detector.for_station(cfg.model.path, cfg) as detector:
        assert detector.card.ref == "signal:1.0.0"


def test_unknown_reference_says_where_it_looked(registry: Registry) -> None:
    with pytest.raises(
        InputError, match=r"model reference signal@production: the registry at .* has no such"
    ):
        resolve_model_path("signal@production", registry.root)


def test_a_version_may_not_be_named_like_a_stage(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((models["weak"] / "model.onnx").read_bytes())
    card = ModelCard.load(models["weak"] / "model_card.json").model_copy(update={"version": "production"})
    card.save(folder / "model_card.json")
    with pytest.raises(ModelError, match="may not be named like a stage"):
        registry.add(folder)


def test_bench_takes_a_reference(
    registry: Registry,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry.add(models["weak"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    monkeypatch.setenv("LINEGUARD_REGISTRY__ROOT", str(registry.root))
    args = ["bench", "latency", "--frames", "2", "--warmup", "0", "--no-mqtt", "--no-ultralytics"]
    args += ["--allow-dirty", "--out", str(tmp_path / "out"), "--name", "ref", "--floor-size", "128"]
    assert main([*args, "--model", "signal@production"]) == 0
    timed = json.loads((tmp_path / "out" / "ref.json").read_text())["variants"][0]["model"]
    assert Path(timed).resolve().parent == (registry.root / "models" / "signal" / "1.0.0").resolve()
    assert main([*args, "--model", "signal@staging"]) == 2
    assert "model reference signal@staging: the registry at" in capsys.readouterr().err
