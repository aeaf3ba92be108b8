"""Shadow mode: the staging model's disagreements with production are counted exactly, never published."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.signal_model import build_signal_onnx

from lineguard.config import ModelConfig, PolicyConfig
from lineguard.edge import ShadowRunner
from lineguard.inference import Detector, VerdictPolicy
from lineguard.messages import ModelCard, Reason, VerdictKind
from lineguard.monitoring import Metrics
from lineguard.synthetic import render_unit

FRAMES = [render_unit(23, i, imgsz=160, defect_rate=0.5).image for i in range(40)]


@pytest.fixture(scope="module")
def onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow_models")
    return {
        "production": build_signal_onnx(root / "prod", version="1.0.0", contrast=0.45),
        "staging": build_signal_onnx(root / "staging", version="2.0.0", contrast=0.19),
    }


def _load(path: Path) -> tuple[Detector, VerdictPolicy]:
    card = ModelCard.load(path.parent / "model_card.json")
    return Detector.load(path, ModelConfig(threads=1), card=card), VerdictPolicy(card, PolicyConfig())


def _offline_disagreements(onnx: dict[str, Path]) -> int:
    """Both models judge every frame independently; count the units whose verdicts differ."""
    (prod, prod_policy), (stage, stage_policy) = _load(onnx["production"]), _load(onnx["staging"])
    try:
        return sum(
            prod_policy.decide(prod.detect(f)[0]).verdict
            is not stage_policy.decide(stage.detect(f)[0]).verdict
            for f in FRAMES
        )
    finally:
        prod.close()
        stage.close()


def test_shadow_disagreements_match_an_offline_comparison(onnx: dict[str, Path]) -> None:
    expected = _offline_disagreements(onnx)
    assert expected > 0  # the staging model catches defects production misses

    metrics = Metrics()
    prod, prod_policy = _load(onnx["production"])
    runner = ShadowRunner(*_load(onnx["staging"]), metrics=metrics)
    try:
        for i, frame in enumerate(FRAMES):
            decision = prod_policy.decide(prod.detect(frame)[0])  # the production verdict goes out first
            runner.run(frame, decision.verdict, reason=decision.reason, unit_id=f"u{i}", seq=i + 1)
    finally:
        prod.close()
        runner.close()

    assert runner.units == len(FRAMES)
    assert runner.disagreements == expected
    assert metrics.registry.get_sample_value("lineguard_shadow_disagreements_total") == expected
    drained = runner.drain()
    assert len(drained) == expected and runner.drain() == []
    assert all(d.production is not d.shadow and d.shadow_model == "signal:2.0.0" for d in drained)
    assert drained[0].frame is not None and drained[0].frame.shape == FRAMES[0].shape


def test_shadow_skips_a_frame_when_there_is_no_time(onnx: dict[str, Path]) -> None:
    runner = ShadowRunner(*_load(onnx["staging"]))
    try:
        assert runner.run(FRAMES[0], VerdictKind.PASS, time_left_ms=0.0) is None
        assert runner.run(FRAMES[0], VerdictKind.PASS, time_left_ms=1000.0) is not None
        assert (runner.units, runner.skipped) == (1, 1)
        assert runner.expected_ms > 0
        assert runner.run(FRAMES[0], VerdictKind.PASS, time_left_ms=runner.expected_ms / 2) is None
        assert runner.skipped == 2
    finally:
        runner.close()


@pytest.mark.parametrize("reason", [Reason.DEADLINE, Reason.IMAGE_QUALITY, Reason.NO_MODEL, Reason.ERROR])
def test_units_production_did_not_judge_are_not_compared(onnx: dict[str, Path], reason: Reason) -> None:
    runner = ShadowRunner(*_load(onnx["staging"]))
    try:
        assert runner.run(FRAMES[0], VerdictKind.NO_DECISION, reason=reason) is None
        assert (runner.units, runner.disagreements, runner.skipped) == (0, 0, 0)
    finally:
        runner.close()
