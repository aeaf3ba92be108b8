"""Opens the frame source a config names.

Kept apart from ``sources`` (the interface and the OpenCV and file sources) because it imports
``gige``, which itself builds on ``sources``.
"""

from __future__ import annotations

from collections.abc import Callable

from lineguard.config import CameraConfig
from lineguard.edge.gige import GigeSource
from lineguard.edge.sources import CaptureSource, FolderSource, FrameSource, SyntheticSource
from lineguard.monitoring import Metrics

__all__ = ["open_source"]

_KINDS: dict[str, Callable[[CameraConfig, Metrics | None], FrameSource]] = {
    "synthetic": SyntheticSource,
    "folder": FolderSource,
    "video": CaptureSource,
    "camera": CaptureSource,
    "stream": CaptureSource,
    "gige": GigeSource,
}


def open_source(cfg: CameraConfig, metrics: Metrics | None = None) -> FrameSource:
    """The source ``cfg.kind`` names (not started); a wrong ``uri`` raises ``ConfigError``.

    A missing optional dependency (PyGObject or Aravis for ``gige``) raises
    ``MissingDependencyError`` naming the install.
    """
    return _KINDS[cfg.kind](cfg, metrics)
