"""lineguard.labeling: doubtful frames to Label Studio, and QA labels back into training data.

``ReviewSampler`` picks frames at the edge, ``ReviewQueue`` keeps them durably until Label Studio
confirms their task, ``LabelStudioClient`` sets up projects and creates tasks with
pre-annotations, and ``pull_dataset`` turns finished annotations into a new dataset version.
Nothing here imports torch, ultralytics or lineguard.training.
"""

from __future__ import annotations

from lineguard.labeling.label_studio import (
    LabelStudioClient,
    LabelStudioSink,
    Project,
    label_config,
    label_config_classes,
    read_token,
    review_task,
    sink_from_config,
)
from lineguard.labeling.pull import PullReport, annotation_boxes, pull_dataset, pulled_task_ids
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
from lineguard.labeling.sampler import REASONS, ReviewSampler, SamplerStats, hamming, perceptual_hash

__all__ = [
    "REASONS",
    "LabelStudioClient",
    "LabelStudioSink",
    "Project",
    "PullReport",
    "QueueStats",
    "RefusedError",
    "ReviewBox",
    "ReviewItem",
    "ReviewQueue",
    "ReviewSampler",
    "ReviewSink",
    "SamplerStats",
    "annotation_boxes",
    "hamming",
    "label_config",
    "label_config_classes",
    "perceptual_hash",
    "pull_dataset",
    "pulled_task_ids",
    "read_stats",
    "read_token",
    "review_dir",
    "review_task",
    "sink_from_config",
]
