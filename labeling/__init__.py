"""lineguard.labeling: doubtful frames to Label Studio, and QA labels back into training data.

``ReviewSampler`` picks frames at the edge, ``ReviewQueue`` keeps them durably until Label Studio
confirms their task, ``LabelStudioClient`` sets up projects and creates tasks with
pre-annotations, ``pull_dataset`` turns finished annotations into a new dataset version, and
``refresh_predictions`` gives the tasks still waiting a newly promoted model's boxes.
Nothing here imports torch, ultralytics or lineguard.training.
"""

from __future__ import annotations

from lineguard.labeling.label_studio import (
    LabelStudioClient,
    LabelStudioSink,
    Project,
    WaitingTask,
    client_from_config,
    label_config,
    label_config_classes,
    prediction,
    read_token,
    review_task,
    sink_from_config,
)
from lineguard.labeling.pull import PullReport, annotation_boxes, pull_dataset, pulled_task_ids
from lineguard.labeling.refresh import RefreshReport, refresh_after_promotion, refresh_predictions
from lineguard.labeling.review_outbox import (
    QueueStats,
    RefusedError,
    ReviewBox,
    ReviewItem,
    ReviewQueue,
    ReviewSink,
    read_stats,
    review_dir,
)
from lineguard.labeling.sampler import (
    REASONS,
    ReviewSampler,
    SamplerStats,
    class_thresholds,
    hamming,
    perceptual_hash,
    review_boxes,
)

__all__ = [
    "REASONS",
    "LabelStudioClient",
    "LabelStudioSink",
    "Project",
    "PullReport",
    "QueueStats",
    "RefreshReport",
    "RefusedError",
    "ReviewBox",
    "ReviewItem",
    "ReviewQueue",
    "ReviewSampler",
    "ReviewSink",
    "SamplerStats",
    "WaitingTask",
    "annotation_boxes",
    "class_thresholds",
    "client_from_config",
    "hamming",
    "label_config",
    "label_config_classes",
    "perceptual_hash",
    "prediction",
    "pull_dataset",
    "pulled_task_ids",
    "read_stats",
    "read_token",
    "refresh_after_promotion",
    "refresh_predictions",
    "review_boxes",
    "review_dir",
    "review_task",
    "sink_from_config",
]
