"""lineguard.training: dataset versions, augmentation, training, evaluation, calibration, export.

Public names are re-exported here; other parts and benchmarks import them from
``lineguard.training``. Nothing here imports torch or ultralytics at import time: those load
inside the functions that train, predict or export (through ``offline.load_ultralytics``).
"""

from lineguard.inference import UnitRates
from lineguard.training.augment import build_transforms, write_preview
from lineguard.training.calibrate import Calibration, calibrate, calibrate_run, write_curve_png
from lineguard.training.config import AugmentConfig, TrainConfig, load_train_config
from lineguard.training.evaluate import Evaluation, evaluate
from lineguard.training.export import OPSET, PARITY_TOLERANCE, export_run
from lineguard.training.graph_cost import multiply_adds
from lineguard.training.importers import FORMATS, ImportReport, import_dataset
from lineguard.training.reference import image_reference
from lineguard.training.train import TrainResult, load_run, train

__all__ = [
    "FORMATS",
    "OPSET",
    "PARITY_TOLERANCE",
    "AugmentConfig",
    "Calibration",
    "Evaluation",
    "ImportReport",
    "TrainConfig",
    "TrainResult",
    "UnitRates",
    "build_transforms",
    "calibrate",
    "calibrate_run",
    "evaluate",
    "export_run",
    "image_reference",
    "import_dataset",
    "load_run",
    "load_train_config",
    "multiply_adds",
    "train",
    "write_curve_png",
    "write_preview",
]
