"""The verdict policy: every branch, in order, and never a PASS by default."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lineguard.config import PolicyConfig
from lineguard.errors import ConfigError
from lineguard.inference import Detections, QualityReport, VerdictPolicy
from lineguard.messages import ModelCard, Reason, VerdictKind

CARD = ModelCard(
    name="m",
    version="1.2.0",
    sha256="0" * 64,
    classes=["scratch", "pit", "crack"],
    input_size=320,
    thresholds={"scratch": 0.5, "pit": 0.7},  # crack has none: the default 0.5 applies
)
OK = QualityReport(brightness=100, contrast=20, sharpness=100, frozen=False, problem=None)
DARK = QualityReport(brightness=5, contrast=1, sharpness=0, frozen=False, problem="too dark (mean 5.0 < 20)")
BIG = (0.1, 0.1, 0.5, 0.5)  # 16 % of the frame
TINY = (0.1, 0.1, 0.12, 0.12)  # 0.04 % of the frame


def dets(*boxes: tuple[int, float, tuple[float, float, float, float]]) -> Detections:
    if not boxes:
        return Detections.empty()
    return Detections.from_arrays(
        [b for _, _, b in boxes], [s for _, s, _ in boxes], [c for c, _, _ in boxes]
    )


P = VerdictKind.PASS
F = VerdictKind.FAIL
N = VerdictKind.NO_DECISION


@pytest.mark.parametrize(
    ("detections", "kwargs", "cfg", "verdict", "reason", "defects", "uncertain"),
    [
        pytest.param(dets(), {}, {}, P, Reason.NO_DEFECT, 0, False, id="empty-passes"),
        pytest.param(None, {}, {}, N, Reason.NO_MODEL, 0, False, id="no-detections-no-model"),
        pytest.param(dets(), {"quality": DARK}, {}, N, Reason.IMAGE_QUALITY, 0, False, id="bad-image"),
        pytest.param(dets(), {"quality": OK}, {}, P, Reason.NO_DEFECT, 0, False, id="good-image-passes"),
        pytest.param(
            dets((0, 0.9, BIG)),
            {"quality": DARK},
            {},
            N,
            Reason.IMAGE_QUALITY,
            0,
            False,
            id="quality-before-defect",
        ),
        pytest.param(dets(), {"elapsed_ms": 201.0}, {}, N, Reason.DEADLINE, 0, False, id="deadline-missed"),
        pytest.param(
            dets(), {"elapsed_ms": 200.0}, {}, P, Reason.NO_DEFECT, 0, False, id="deadline-met-exactly"
        ),
        pytest.param(
            dets(), {"elapsed_ms": float("nan")}, {}, N, Reason.DEADLINE, 0, False, id="deadline-nan"
        ),
        pytest.param(
            dets((0, 0.9, BIG)),
            {"elapsed_ms": 500.0},
            {},
            N,
            Reason.DEADLINE,
            0,
            False,
            id="deadline-before-defect",
        ),
        pytest.param(dets((0, 0.5, BIG)), {}, {}, F, Reason.DEFECT, 1, False, id="at-threshold-fails"),
        pytest.param(dets((1, 0.69, BIG)), {}, {}, N, Reason.UNCERTAIN, 0, True, id="per-class-threshold"),
        pytest.param(dets((2, 0.55, BIG)), {}, {}, F, Reason.DEFECT, 1, False, id="class-without-threshold"),
        pytest.param(
            dets((0, 0.45, BIG)), {}, {}, N, Reason.UNCERTAIN, 0, True, id="review-band-no-decision"
        ),
        pytest.param(
            dets((0, 0.45, BIG)),
            {},
            {"uncertain_action": "fail"},
            F,
            Reason.UNCERTAIN,
            0,
            True,
            id="review-band-fail-safe",
        ),
        pytest.param(dets((0, 0.39, BIG)), {}, {}, P, Reason.NO_DEFECT, 0, False, id="below-band-passes"),
        pytest.param(
            dets((0, 0.45, BIG)), {}, {"review_band": 0.0}, P, Reason.NO_DEFECT, 0, False, id="no-band"
        ),
        pytest.param(
            dets((0, 0.9, TINY)),
            {},
            {"min_box_area": 0.01},
            P,
            Reason.NO_DEFECT,
            0,
            False,
            id="tiny-box-ignored",
        ),
        pytest.param(
            dets((0, 0.9, TINY)), {}, {}, F, Reason.DEFECT, 1, False, id="tiny-box-counts-by-default"
        ),
        pytest.param(
            dets((0, 0.9, BIG), (1, 0.65, BIG)), {}, {}, F, Reason.DEFECT, 1, True, id="defect-and-doubt"
        ),
        pytest.param(
            dets((0, 0.3, BIG)),
            {},
            {"class_thresholds": {"scratch": 0.3}},
            F,
            Reason.DEFECT,
            1,
            False,
            id="station-override",
        ),
    ],
)
def test_policy_branches(
    detections: Detections | None,
    kwargs: dict[str, Any],
    cfg: dict[str, Any],
    verdict: VerdictKind,
    reason: Reason,
    defects: int,
    uncertain: bool,
) -> None:
    decision = VerdictPolicy(CARD, PolicyConfig(**cfg)).decide(detections, **kwargs)
    assert (decision.verdict, decision.reason) == (verdict, reason)
    assert len(decision.defects) == defects
    assert decision.uncertain is uncertain


def test_without_a_model_there_is_no_decision() -> None:
    decision = VerdictPolicy(None, PolicyConfig()).decide(dets(), quality=OK, elapsed_ms=1.0)
    assert (decision.verdict, decision.reason) == (N, Reason.NO_MODEL)


def test_defects_carry_class_names_and_boxes_best_first() -> None:
    found = dets((2, 0.6, (0.0, 0.2, 0.4, 1.0)), (0, 0.95, BIG), (1, 0.2, BIG))
    decision = VerdictPolicy(CARD, PolicyConfig()).decide(found)
    assert [(d.class_name, d.class_id, round(d.confidence, 2)) for d in decision.defects] == [
        ("scratch", 0, 0.95),
        ("crack", 2, 0.6),
    ]
    assert decision.defects[1].box == pytest.approx((0.0, 0.2, 0.4, 1.0))


def test_an_error_inside_the_policy_never_passes() -> None:
    bad_class = Detections.from_arrays([BIG], [0.9], [7])  # a class the card does not have
    decision = VerdictPolicy(CARD, PolicyConfig()).decide(bad_class)
    assert (decision.verdict, decision.reason) == (N, Reason.ERROR)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"dent": 0.4}, "unknown classes \\['dent'\\]"),
        ({"scratch": 0.0}, "must be in \\(0, 1\\]"),
        ({"scratch": 1.5}, "must be in \\(0, 1\\]"),
    ],
)
def test_bad_station_overrides_are_config_errors(overrides: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VerdictPolicy(CARD, PolicyConfig(class_thresholds=overrides))


def test_thresholds_id_names_the_card_and_changes_with_overrides() -> None:
    plain = VerdictPolicy(CARD, PolicyConfig()).thresholds_id
    again = VerdictPolicy(CARD, PolicyConfig()).thresholds_id
    override = VerdictPolicy(CARD, PolicyConfig(class_thresholds={"pit": 0.6})).thresholds_id
    assert plain == again
    assert plain.startswith("m:1.2.0+")
    assert override != plain
    assert VerdictPolicy(None, PolicyConfig()).thresholds_id == "none"


def test_thresholds_id_covers_the_cards_thresholds() -> None:
    raised = CARD.model_copy(update={"thresholds": {"scratch": 0.99, "pit": 0.99, "crack": 0.99}})
    plain = VerdictPolicy(CARD, PolicyConfig()).thresholds_id
    assert VerdictPolicy(raised, PolicyConfig()).thresholds_id != plain  # same name:version, other card
    same = VerdictPolicy(CARD, PolicyConfig(class_thresholds={"pit": 0.7})).thresholds_id
    assert same == plain  # an override equal to the card's threshold changes nothing that decides


def test_threshold_in_force_per_class() -> None:
    policy = VerdictPolicy(CARD, PolicyConfig(class_thresholds={"crack": 0.8}))
    assert [policy.threshold(c) for c in CARD.classes] == pytest.approx([0.5, 0.7, 0.8])
    assert np.isclose(policy.threshold("pit"), 0.7)


def _unit(depth: int) -> npt.NDArray[np.uint8]:
    """Bright metal with one thin dark mark ``depth`` grey levels deep (0: a flawless unit)."""
    image = np.full((160, 160, 3), 200, np.uint8)
    image[70:90, 79:82] = 200 - depth
    return image


@pytest.mark.parametrize(
    ("depth", "verdict", "reason"),
    [
        (100, F, Reason.DEFECT),  # top-hat 0.39: far above the 0.5 confidence threshold
        (46, N, Reason.UNCERTAIN),  # top-hat 0.18: confidence ~0.45, in the band [0.4, 0.5)
        (0, P, Reason.NO_DEFECT),  # flat: every score ~0.02, below the 0.05 floor
    ],
)
def test_each_reason_occurs_with_a_real_onnx_model_through_the_policy(
    tmp_path_factory: pytest.TempPathFactory, depth: int, verdict: VerdictKind, reason: Reason
) -> None:
    """The edge's detector (ONNX Runtime, floor 0.05) and default policy, on a model that sees marks."""
    from support.signal_model import build_signal_onnx

    from lineguard.config import ModelConfig
    from lineguard.inference import Detector

    folder = tmp_path_factory.mktemp("signal")
    onnx_path = build_signal_onnx(folder, gain=20.0)
    card = ModelCard.load(folder / "model_card.json")
    policy_cfg = PolicyConfig()
    assert min(card.thresholds.values()) - policy_cfg.review_band >= policy_cfg.min_confidence
    detector = Detector.load(
        onnx_path, ModelConfig(threads=1), min_confidence=policy_cfg.min_confidence, card=card
    )
    try:
        found, _ = detector.detect(_unit(depth))
    finally:
        detector.close()
    decision = VerdictPolicy(card, policy_cfg).decide(found, quality=OK, elapsed_ms=1.0)
    assert (decision.verdict, decision.reason) == (verdict, reason), found.confidence
