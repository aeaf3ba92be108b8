"""lineguard.registry: model versions, stages, the promotion gate, rollout and the artifact server.

The records live behind ``RegistryBackend``: the file registry (default) or an MLflow Model
Registry (``registry.uri``; ``registry/mlflow_backend.py``, which alone imports the mlflow client).

Public names are re-exported here; other parts import them from ``lineguard.registry``. The
registry never imports torch or training code: the gate evaluates ONNX with the edge's detector.
"""

from lineguard.registry.backend import FileBackend, RegistryBackend
from lineguard.registry.evaluation import (
    EvalResult,
    EvalSet,
    Evaluator,
    EvalUnit,
    average_precision_50,
    evaluate_model,
    golden_problems,
)
from lineguard.registry.gate import (
    GATE_REPORT_SCHEMA,
    GateCheck,
    GateReport,
    GoldenRunner,
    compare,
    gate_from_config,
    run_gate,
    target_check,
)
from lineguard.registry.rollout import (
    MODEL_MESSAGE_SCHEMA,
    Announcement,
    artifact_url,
    desired_payload,
    publish_model,
)
from lineguard.registry.server import ArtifactServer, create_app, read_token
from lineguard.registry.store import (
    CARD_FILE,
    ONNX_FILE,
    Event,
    ModelVersion,
    Registry,
    Stage,
    StationFollow,
    current_user,
    parse_ref,
)

__all__ = [
    "CARD_FILE",
    "GATE_REPORT_SCHEMA",
    "MODEL_MESSAGE_SCHEMA",
    "ONNX_FILE",
    "Announcement",
    "ArtifactServer",
    "EvalResult",
    "EvalSet",
    "EvalUnit",
    "Evaluator",
    "Event",
    "FileBackend",
    "GateCheck",
    "GateReport",
    "GoldenRunner",
    "ModelVersion",
    "Registry",
    "RegistryBackend",
    "Stage",
    "StationFollow",
    "artifact_url",
    "average_precision_50",
    "compare",
    "create_app",
    "current_user",
    "desired_payload",
    "evaluate_model",
    "gate_from_config",
    "golden_problems",
    "parse_ref",
    "publish_model",
    "read_token",
    "run_gate",
    "target_check",
]
