"""Fresh predictions for work in waiting: a newly promoted model redraws the tasks QA has not done.

Tasks sit in Label Studio for days with the boxes of the model that sampled them. When a better
model reaches production, staff should correct its guess, not the retired one's, as Label
Studio's ML-backend users get. ``refresh_predictions`` lists the project's tasks that nobody has
annotated or skipped, fetches each task's image from Label Studio (bounded, decoded through the
station's own size-checked decoder), runs the model and adds its boxes as one more prediction
labelled ``name:version``. Older predictions stay, so staff can compare; a task that already
carries this model's prediction is left alone, so running it twice adds nothing. One bad image is
counted and skipped; an unreachable server or a refused token stops the run with one line.

``refresh_after_promotion`` is the hook the registry and ``retrain --auto-promote`` call after a
production promotion: it never raises, because a promotion must not fail for Label Studio's sake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from lineguard.errors import InputError, LineguardError
from lineguard.inference import Detector, decode_image
from lineguard.labeling.label_studio import (
    MAX_IMAGE_BYTES,
    LabelStudioClient,
    WaitingTask,
    client_from_config,
    prediction,
)
from lineguard.labeling.review_outbox import RefusedError
from lineguard.labeling.sampler import class_thresholds, review_boxes

if TYPE_CHECKING:
    from lineguard.config import LineguardConfig

__all__ = ["RefreshReport", "refresh_after_promotion", "refresh_predictions"]

PROGRESS_EVERY: Final = 25


@dataclass
class RefreshReport:
    """What a refresh did: tasks waiting, given the new prediction, already carrying it, failed."""

    model_version: str
    waiting: int = 0
    refreshed: int = 0
    already: int = 0
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"refreshed {self.refreshed} waiting tasks with {self.model_version}"
        if self.already:
            text += f" ({self.already} already had its prediction)"
        if self.failed:
            first = next(iter(self.failed.items()))
            text += f"; {len(self.failed)} failed (task {first[0]}: {first[1]})"
        return text


def refresh_predictions(
    client: LabelStudioClient,
    project: str,
    detector: Detector,
    *,
    uncertain_band: float = 0.15,
    page_size: int = 100,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    progress: Callable[[str], None] | None = None,
) -> RefreshReport:
    """Give every waiting task of ``project`` the boxes of ``detector``'s model as a new prediction.

    ``uncertain_band`` is the station's ``sampling.uncertain_band``: boxes that far below their
    class threshold are still drawn, as on the frames the station samples.
    """
    card = detector.card
    report = RefreshReport(model_version=card.ref)
    thresholds = class_thresholds(card.classes, card.thresholds)
    project_id = client.project(project).id
    waiting = client.waiting_tasks(project_id, page_size=page_size)
    report.waiting = len(waiting)
    todo = [task for task in waiting if card.ref not in task.model_versions]
    report.already = len(waiting) - len(todo)
    if progress is not None and todo:
        progress(f"{len(todo)} of {len(waiting)} waiting tasks need {card.ref}'s prediction")
    for done, task in enumerate(todo, start=1):
        try:
            _refresh_one(client, task, detector, thresholds, uncertain_band, max_image_bytes)
        except (InputError, RefusedError) as exc:
            report.failed[task.id] = str(exc)
        else:
            report.refreshed += 1
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(todo)):
            progress(f"{done}/{len(todo)} tasks done")
    return report


def _refresh_one(
    client: LabelStudioClient,
    task: WaitingTask,
    detector: Detector,
    thresholds: npt.NDArray[np.float32],
    band: float,
    max_image_bytes: int,
) -> None:
    if not task.image_url:
        raise InputError("the task names no image")
    frame = decode_image(client.download(task.image_url, max_bytes=max_image_bytes))
    detections, _ = detector.detect(frame)
    boxes = review_boxes(detections, detector.card.classes, thresholds, band)
    score = max((box.confidence for box in boxes), default=0.0)
    height, width = frame.shape[:2]
    client.add_prediction(task.id, prediction(boxes, int(width), int(height), detector.card.ref, score))


def refresh_after_promotion(
    cfg: LineguardConfig,
    model_path: Path,
    *,
    client: LabelStudioClient | None = None,
    project: str | None = None,
    say: Callable[[str], None] = print,
) -> RefreshReport | None:
    """After a production promotion: refresh the waiting tasks if Label Studio is configured.

    ``model_path`` may be a reference such as ``name@version`` in ``registry.root``. ``client``
    and ``project`` default to ``cfg.sampling``'s server, token file and project;
    without ``sampling.label_studio_url`` (and no ``client``) nothing happens. Never raises: a
    failure is one ``warning:`` line, because the promotion it follows has already happened.
    """
    title = project or cfg.sampling.label_studio_project
    own = client is None
    try:
        client = client or client_from_config(cfg.sampling)
        if client is None:
            return None
        try:
            with Detector.for_station(model_path, cfg) as detector:
                report = refresh_predictions(
                    client, title, detector, uncertain_band=cfg.sampling.uncertain_band, progress=say
                )
        finally:
            if own:
                client.close()
    except LineguardError as exc:
        say(f"warning: Label Studio tasks waiting in {title!r} not refreshed: {exc}")
        return None
    except Exception as exc:  # the promotion stands whatever Label Studio answers
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        say(f"warning: Label Studio tasks waiting in {title!r} not refreshed: {type(exc).__name__}: {first}")
        return None
    say(report.summary())
    return report
