"""The verdict policy: detections (plus image quality and elapsed time) become PASS, FAIL or NO_DECISION.

Rules, first match wins: no model (or no detections) -> NO_DECISION/no_model; a quality problem ->
NO_DECISION/image_quality; over the deadline -> NO_DECISION/deadline; any box at or above its class
threshold (the card's, overridden per station) and at least ``min_box_area`` -> FAIL/defect; any
box in the review band just below its threshold -> NO_DECISION/uncertain or FAIL/uncertain (fail
safe), by config; otherwise PASS/no_defect. PASS is only ever the result of that last rule: any
error on the way gives NO_DECISION/error, because a wrong PASS ships a defective part.

A unit seen by several cameras (views) gets one decision from its views' verdicts
(``combine_views``), first match wins: any view FAIL -> FAIL (a defect seen from one side is a
defect, whatever another view could not tell); any view without a decision (no frame, image
quality, uncertain...) -> NO_DECISION with that view's reason (a view without a frame first, else
the first in config order); the unit over its deadline (first capture to decision, so it covers
the slowest view), or a view over its own -> NO_DECISION/deadline naming the slowest view;
otherwise PASS. The decision names the view that made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineguard.config import PolicyConfig
from lineguard.errors import ConfigError, InputError
from lineguard.inference.detections import Detections
from lineguard.inference.quality import QualityReport
from lineguard.logs import Events
from lineguard.messages import Defect, ModelCard, Reason, VerdictKind, ViewVerdict

__all__ = ["DEFAULT_THRESHOLD", "Decision", "VerdictPolicy", "combine_views"]

DEFAULT_THRESHOLD = 0.5  # for a class the card lists without a threshold

event = Events(__name__)


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one unit and why; ``defects`` are the boxes at/above threshold."""

    verdict: VerdictKind
    reason: Reason
    defects: tuple[Defect, ...] = ()
    uncertain: bool = False  # some detection fell in the review band (the labeling sampler uses this)
    view: str | None = None  # several views: the view that made the decision (``combine_views``)
    views: tuple[ViewVerdict, ...] = ()  # several views: each view's part, in config order


def combine_views(views: Sequence[ViewVerdict], *, late: str | None = None) -> Decision:
    """One decision for a unit from its views' verdicts; ``late`` names the slowest view when the
    unit as a whole missed its deadline. Pure: the rules are in the module's docstring."""
    if not views:
        return Decision(VerdictKind.NO_DECISION, Reason.ERROR)
    every = tuple(views)
    defects = tuple(defect for view in every for defect in view.defects)
    failed = next((view for view in every if view.verdict is VerdictKind.FAIL), None)
    if failed is not None:
        return Decision(VerdictKind.FAIL, failed.reason, defects, view=failed.name, views=every)
    doubts = [view for view in every if view.verdict is VerdictKind.NO_DECISION]
    # A view without a frame first; a view's own deadline last: it may have run out only while the
    # station waited for a slower view, which the unit's deadline names.
    for reasons in ({Reason.CAMERA}, set(Reason) - {Reason.DEADLINE}):
        doubt = next((view for view in doubts if view.reason in reasons), None)
        if doubt is not None:
            return Decision(VerdictKind.NO_DECISION, doubt.reason, defects, view=doubt.name, views=every)
    if doubts or late is not None:
        slowest = late if late is not None else doubts[0].name
        return Decision(VerdictKind.NO_DECISION, Reason.DEADLINE, defects, view=slowest, views=every)
    return Decision(VerdictKind.PASS, Reason.NO_DEFECT, defects, views=every)


class VerdictPolicy:
    """Applies one station's thresholds to detections; cheap to build, so a model swap builds a new one."""

    def __init__(self, card: ModelCard | None, cfg: PolicyConfig) -> None:
        self.card = card
        self.cfg = cfg
        self._thresholds: npt.NDArray[np.float32] = np.zeros((0,), np.float32)
        if card is None:
            self.thresholds_id = "none"
            return
        unknown = sorted(set(cfg.class_thresholds) - set(card.classes))
        if unknown:
            raise ConfigError(
                f"policy.class_thresholds names unknown classes {unknown}; "
                f"model {card.ref} has {card.classes}"
            )
        bad = {k: v for k, v in cfg.class_thresholds.items() if not 0.0 < v <= 1.0}
        if bad:
            raise ConfigError(f"policy.class_thresholds must be in (0, 1]; got {bad}")
        effective = {
            name: float(cfg.class_thresholds.get(name, card.threshold_for(name, DEFAULT_THRESHOLD)))
            for name in card.classes
        }
        self._thresholds = np.asarray([effective[name] for name in card.classes], np.float32)
        # What decides a verdict, whichever file set it: a card with raised thresholds changes the id.
        rules = {
            "thresholds": {name: float(self._thresholds[i]) for i, name in enumerate(card.classes)},
            "min_confidence": cfg.min_confidence,
            "min_box_area": cfg.min_box_area,
            "review_band": cfg.review_band,
            "uncertain_action": cfg.uncertain_action,
        }
        digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:8]
        self.thresholds_id = f"{card.name}:{card.version}+{digest}"

    def threshold(self, class_name: str) -> float:
        """The threshold in force for ``class_name``."""
        if self.card is None or class_name not in self.card.classes:
            raise InputError(f"no threshold for class {class_name!r}")
        return float(self._thresholds[self.card.classes.index(class_name)])

    def decide(
        self,
        detections: Detections | None,
        *,
        quality: QualityReport | None = None,
        elapsed_ms: float | None = None,
    ) -> Decision:
        """The decision for one unit; never raises, never PASSes on an error path."""
        try:
            return self._decide(detections, quality, elapsed_ms)
        except Exception:
            event(logging.ERROR, "policy_failed", exc_info=True, verdict="NO_DECISION/error")
            return Decision(VerdictKind.NO_DECISION, Reason.ERROR)

    def _decide(
        self, detections: Detections | None, quality: QualityReport | None, elapsed_ms: float | None
    ) -> Decision:
        if self.card is None or detections is None:
            return Decision(VerdictKind.NO_DECISION, Reason.NO_MODEL)
        card = self.card
        if len(detections) and (
            detections.class_id.min() < 0 or detections.class_id.max() >= len(card.classes)
        ):
            raise InputError(
                f"class id outside the card's {len(card.classes)} classes: {detections.class_id}"
            )
        counted = detections[detections.area >= self.cfg.min_box_area] if len(detections) else detections
        thr = self._thresholds[counted.class_id] if len(counted) else np.zeros((0,), np.float32)
        hit = counted.confidence >= thr
        band = (counted.confidence < thr) & (counted.confidence >= thr - self.cfg.review_band)
        uncertain = bool(self.cfg.review_band > 0 and band.any())
        if quality is not None and quality.problem is not None:
            return Decision(VerdictKind.NO_DECISION, Reason.IMAGE_QUALITY, uncertain=uncertain)
        if elapsed_ms is not None and not elapsed_ms <= self.cfg.deadline_ms:  # NaN counts as missed
            return Decision(VerdictKind.NO_DECISION, Reason.DEADLINE, uncertain=uncertain)
        if hit.any():
            return Decision(
                VerdictKind.FAIL, Reason.DEFECT, self._defects(counted[hit], card.classes), uncertain
            )
        if uncertain:
            kind = VerdictKind.FAIL if self.cfg.uncertain_action == "fail" else VerdictKind.NO_DECISION
            return Decision(kind, Reason.UNCERTAIN, uncertain=True)
        return Decision(VerdictKind.PASS, Reason.NO_DEFECT)

    @staticmethod
    def _defects(found: Detections, classes: list[str]) -> tuple[Defect, ...]:
        order = np.argsort(-found.confidence, kind="stable")
        boxes = np.clip(found.xyxy, 0.0, 1.0)
        return tuple(
            Defect.model_validate(
                {
                    "class": classes[int(found.class_id[i])],
                    "class_id": int(found.class_id[i]),
                    "confidence": min(1.0, max(0.0, float(found.confidence[i]))),
                    "box": tuple(float(v) for v in boxes[i]),
                }
            )
            for i in order
        )
