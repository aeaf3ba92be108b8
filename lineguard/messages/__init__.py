"""lineguard.messages: every wire format, one pydantic model each.

Verdict, status and alert (what a station publishes), trigger, feedback and desired model (what
it receives), model card and dataset manifest (what the registry and training exchange). Line
controllers, MES and QA tooling depend on the field names: change them only with a new schema
version. ``python -m lineguard.schemas schemas`` writes their JSON Schemas.
"""

from lineguard.messages.alert import ALERT_SCHEMA, MAX_ALERT_BYTES, Alert, AlertKind, AlertLevel, build_alert
from lineguard.messages.control import (
    FEEDBACK_SCHEMA,
    MODEL_MESSAGE_SCHEMA,
    MODEL_NAME,
    MODEL_VERSION,
    RELEASE_SCHEMA,
    TRIGGER_SCHEMA,
    DesiredModel,
    Feedback,
    Release,
    Trigger,
    UnitId,
    card_url_for,
    follow_topic,
    is_unit_id,
)
from lineguard.messages.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, DatasetManifest, ManifestFile
from lineguard.messages.model_card import (
    MODEL_CARD_SCHEMA,
    CalibrationTargets,
    ClassMetrics,
    ExportParity,
    ImageRange,
    ModelCard,
    ModelMetrics,
    ReferenceSource,
    ReferenceStats,
    TargetsAchieved,
    sha256_file,
)
from lineguard.messages.status import STATUS_SCHEMA, CameraStatus, StationStatus
from lineguard.messages.verdict import (
    VERDICT_SCHEMA,
    Defect,
    ImageRef,
    ModelRef,
    Reason,
    UnitSource,
    Verdict,
    VerdictKind,
    utc_now,
)

__all__ = [
    "ALERT_SCHEMA",
    "FEEDBACK_SCHEMA",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "MAX_ALERT_BYTES",
    "MODEL_CARD_SCHEMA",
    "MODEL_MESSAGE_SCHEMA",
    "MODEL_NAME",
    "MODEL_VERSION",
    "RELEASE_SCHEMA",
    "STATUS_SCHEMA",
    "TRIGGER_SCHEMA",
    "VERDICT_SCHEMA",
    "Alert",
    "AlertKind",
    "AlertLevel",
    "CalibrationTargets",
    "CameraStatus",
    "ClassMetrics",
    "DatasetManifest",
    "Defect",
    "DesiredModel",
    "ExportParity",
    "Feedback",
    "ImageRange",
    "ImageRef",
    "ManifestFile",
    "ModelCard",
    "ModelMetrics",
    "ModelRef",
    "Reason",
    "ReferenceSource",
    "ReferenceStats",
    "Release",
    "StationStatus",
    "TargetsAchieved",
    "Trigger",
    "UnitId",
    "UnitSource",
    "Verdict",
    "VerdictKind",
    "build_alert",
    "card_url_for",
    "follow_topic",
    "is_unit_id",
    "sha256_file",
    "utc_now",
]
