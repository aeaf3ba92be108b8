"""Keep ultralytics and albumentations off the network: call ``load_ultralytics`` to import them.

Offline, ultralytics would otherwise probe DNS, check versions, try to pip-install missing
packages, download Arial for plots on every train/val run and download weights for the AMP check.
The environment must be set before the first import, so every import of ultralytics in lineguard
goes through here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

from lineguard.errors import MissingDependencyError

__all__ = ["config_dir", "load_ultralytics", "set_offline_environment"]

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def config_dir() -> Path:
    """Where ultralytics keeps settings and fonts: ours, never the user's home default."""
    root = os.environ.get("LINEGUARD_CACHE_DIR") or str(Path.home() / ".cache" / "lineguard")
    return Path(root) / "ultralytics"


def set_offline_environment(directory: Path | None = None) -> Path:
    """Set the variables that stop downloads and install a local font under the expected names."""
    directory = directory or config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", str(directory / "matplotlib"))
    fonts = directory / "Ultralytics"
    fonts.mkdir(exist_ok=True)
    missing = [name for name in _FONTS if not (fonts / name).exists()]
    if missing:
        source = _local_font()
        for name in missing:
            shutil.copyfile(source, fonts / name)
    return directory


def _local_font() -> Path:
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("matplotlib", "train") from exc
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def load_ultralytics(threads: int | None = None) -> ModuleType:
    """Import ultralytics offline, with hub sync and logger integrations off."""
    set_offline_environment()
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS, torch_utils
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(exc.name or "ultralytics", "train") from exc
    off = {"sync": False, "hub": False}
    for key in ("clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb"):
        off[key] = key == "mlflow" and bool(os.environ.get("MLFLOW_TRACKING_URI"))
    SETTINGS.update({k: v for k, v in off.items() if k in SETTINGS})
    # ultralytics pins torch to one thread on a 2-core machine; two nearly halve epoch time.
    torch_utils.NUM_THREADS = threads or max(1, os.cpu_count() or 1)
    module: ModuleType = ultralytics
    return module
