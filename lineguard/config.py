"""Station configuration: one typed tree, loaded from YAML with ``LINEGUARD_…`` overrides.

Every section inherits a base that forbids unknown keys, so a misspelled key fails at start-up
with its path (``mqtt.prot: unknown key``) instead of silently running on a default. Every field
has a default that suits a developer's machine and a description; rules that span fields are
small named validators. Environment variables override the file: ``LINEGUARD_MQTT__HOST=broker``
sets ``mqtt.host`` (sections joined by a double underscore, values parsed as YAML scalars); a
misspelled section path is an error like a misspelled key in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lineguard.errors import ConfigError, validation_message

__all__ = [
    "ENV_PREFIX",
    "CameraConfig",
    "CanaryGuards",
    "CanaryPlan",
    "CanarySelection",
    "CanarySoak",
    "FrameStoreConfig",
    "GateConfig",
    "GigeConfig",
    "HttpConfig",
    "LineguardConfig",
    "ModelConfig",
    "MonitoringConfig",
    "MqttConfig",
    "OpcuaConfig",
    "OutboxConfig",
    "PolicyConfig",
    "Profile",
    "QualityConfig",
    "RegistryConfig",
    "SamplingConfig",
    "StationConfig",
    "SwapGuardConfig",
    "load_config",
    "load_plan",
    "read_yaml_mapping",
]

ENV_PREFIX = "LINEGUARD_"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Profile(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class StationConfig(Section):
    line: str = Field(default="line1", pattern=r"^[A-Za-z0-9_-]+$", description="Line id (topic).")
    station: str = Field(default="station1", pattern=r"^[A-Za-z0-9_-]+$", description="Station id (topic).")
    profile: Profile = Field(
        default=Profile.DEVELOPMENT,
        description="production refuses to start without MQTT TLS + credentials, an API token, a "
        "pinned registry key and (when OPC UA is on) OPC UA encryption + credentials.",
    )
    data_dir: Path = Field(
        default=Path("var"), description="Outbox, review queue, models and logs live here."
    )


# Above any line camera (a 25 MP sensor fits), far below an image bomb's claimed size.
MAX_IMAGE_PIXELS: Final = 40_000_000


class GigeConfig(Section):
    """A GigE Vision camera's acquisition settings (``camera.kind: gige``), written to it on connect.

    A camera keeps its settings across connections (another tool may have left it triggered), so
    every setting that decides which frames arrive is written each time; exposure, gain and packet
    size left unset (null) keep the camera's own value or its negotiated packet size.
    """

    pixel_format: Literal["Mono8", "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8", "RGB8"] = Field(
        default="Mono8", description="Sensor format; every one becomes a BGR frame."
    )
    exposure_us: float | None = Field(
        default=None, gt=0, le=10_000_000, description="Exposure time in µs; null = the camera's."
    )
    gain_db: float | None = Field(default=None, ge=0, le=48, description="Gain in dB; null = the camera's.")
    trigger: Literal["free_run", "software", "hardware"] = Field(
        default="free_run",
        description="free_run: frames at camera.fps; software: one frame per station trigger "
        "(mode: triggered); hardware: one frame per edge on trigger_line (a PLC or light barrier).",
    )
    trigger_line: str = Field(
        default="Line0", pattern=r"^Line[0-9]{1,2}$", description="Input line of a hardware trigger."
    )
    trigger_activation: Literal["rising_edge", "falling_edge"] = Field(
        default="rising_edge", description="Which edge of the trigger line starts an exposure."
    )
    buffers: int = Field(
        default=8, ge=2, le=64, description="Stream buffers queued for the camera (frames in flight)."
    )
    packet_size: int | None = Field(
        default=None, ge=576, le=9000, description="GVSP packet size in bytes; null = negotiated."
    )


class CameraConfig(Section):
    kind: Literal["synthetic", "video", "folder", "camera", "stream", "gige"] = Field(
        default="synthetic", description="Frame source type."
    )
    uri: str = Field(
        default="",
        description="Video path, image folder, camera index (0), rtsp:// / http:// URL; for gige the "
        "camera's IP address, serial number or Aravis device id (empty: the first camera found).",
    )
    fps: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description="Frames per second to pace at (a free-running gige camera's rate).",
    )
    loop: bool = Field(default=False, description="Restart a video or folder at its end.")
    watchdog_s: float = Field(default=5.0, gt=0, description="No frame this long = camera down.")
    frozen_frames: int = Field(
        default=10, ge=2, description="This many identical frames in a row = camera frozen."
    )
    reconnect_max_s: float = Field(default=10.0, gt=0, description="Backoff cap for streams.")
    max_image_pixels: int = Field(
        default=MAX_IMAGE_PIXELS,
        ge=1,
        description="Largest image (width x height, from its header) an upload or image folder may hold.",
    )
    synthetic_seed: int = Field(default=0, description="Seed of the synthetic line.")
    synthetic_imgsz: int = Field(default=320, ge=64, le=4096)
    synthetic_defect_rate: float = Field(default=0.3, ge=0, le=1)
    synthetic_condition: str = Field(
        default="nominal", description="Named condition of the synthetic line (drift tests)."
    )
    gige: GigeConfig = GigeConfig()


class ModelConfig(Section):
    path: Path | None = Field(
        default=None,
        description="ONNX file (model_card.json beside it), or NAME@production (staging, a version).",
    )
    backend: Literal["auto", "onnxruntime", "openvino"] = Field(
        default="auto",
        description="auto: onnxruntime on a CUDA/TensorRT host, else OpenVINO if installed, else ORT CPU.",
    )
    providers: list[str] = Field(
        default=[], description="onnxruntime providers in order; empty = best available."
    )
    threads: int = Field(default=2, ge=1, le=256, description="Intra-op threads for inference.")
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto",
        description=(
            "auto: the fastest variant the card certifies and this CPU runs, kept only if faster at load; "
            "fp32; bf16 or int8: that variant (refused if the card lists it uncertified)."
        ),
    )
    confirm_runs: int = Field(
        default=8,
        ge=0,
        le=100,
        description="auto: frames timed on fp32 and on the chosen variant at load; 0 = trust the card.",
    )
    warmup_runs: int = Field(default=3, ge=0)
    shadow_path: Path | None = Field(
        default=None,
        description="A staging model that judges the same frames silently (shadow mode), when time allows.",
    )


class QualityConfig(Section):
    """Bounds of the image-quality gate; a bound left unset (null) is derived from the model card.

    A fixed bound that suits one line rejects good frames of another (bright steel, dark rubber),
    so by default the gate widens its built-in limits to cover the frames the model was trained on.
    """

    min_brightness: float | None = Field(
        default=None,
        ge=0,
        le=255,
        description="Mean gray below = too dark; null = 20, lowered to the model's reference frames.",
    )
    max_brightness: float | None = Field(
        default=None,
        ge=0,
        le=255,
        description="Mean gray above = too bright; null = 235, raised to the model's reference frames.",
    )
    min_sharpness: float | None = Field(
        default=None,
        ge=0,
        description="Variance of the Laplacian below = blurred; null = 5, lowered to the reference frames.",
    )
    auto_margin: float = Field(
        default=10.0,
        ge=0,
        le=128,
        description="Gray levels an automatic brightness bound keeps beyond the reference frames' extremes.",
    )

    @model_validator(mode="after")
    def _brightness_bounds_ordered(self) -> QualityConfig:
        low, high = self.min_brightness, self.max_brightness
        if low is not None and high is not None and low >= high:
            raise ValueError(f"min_brightness ({low:g}) must be below max_brightness ({high:g})")
        return self


class PolicyConfig(Section):
    deadline_ms: float = Field(default=200.0, gt=0, description="Capture to decision budget.")
    min_box_area: float = Field(
        default=0.0, ge=0, le=1, description="Boxes smaller than this share of the frame are ignored."
    )
    class_thresholds: dict[str, float] = Field(
        default={}, description="Per-class overrides of the model card's thresholds."
    )
    review_band: float = Field(
        default=0.1, ge=0, le=1, description="Confidence band below a threshold that is doubtful."
    )
    uncertain_action: Literal["no_decision", "fail"] = Field(
        default="no_decision", description="What a doubtful unit gets: NO_DECISION or FAIL."
    )
    nms_iou: float = Field(default=0.45, gt=0, le=1)
    min_confidence: float = Field(
        default=0.05, gt=0, le=1, description="Boxes below are dropped before NMS (speed)."
    )
    quality: QualityConfig = QualityConfig()

    @property
    def lowest_threshold(self) -> float:
        """Floor + review band: a threshold below it hides part of its band under the floor."""
        return round(self.min_confidence + self.review_band, 6)

    def hidden_band(self, thresholds: dict[str, float]) -> dict[str, float]:
        """The thresholds whose review band reaches below ``min_confidence`` (doubtful boxes dropped).

        Values outside (0, 1] are left to the verdict policy, which names them as such.
        """
        return {k: v for k, v in thresholds.items() if 0.0 < v < self.lowest_threshold - 1e-9}

    @model_validator(mode="after")
    def _review_band_is_reachable(self) -> PolicyConfig:
        hidden = self.hidden_band(self.class_thresholds)
        if hidden:
            key, value = next(iter(sorted(hidden.items())))
            raise ValueError(
                f"policy.class_thresholds.{key} {value:g} is below policy.min_confidence "
                f"{self.min_confidence:g} + policy.review_band {self.review_band:g}, so its uncertain "
                f"band can never fire; raise it to at least {self.lowest_threshold:g} or lower the other two"
            )
        return self


class MqttTlsConfig(Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(Section):
    enabled: bool = Field(default=True, description="Publish verdicts to MQTT.")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str = Field(default="", description="Empty = lineguard-<line>-<station>.")
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_file: Path | None = Field(default=None, description="File holding the password.")
    tls: MqttTlsConfig | None = None
    status_interval_s: float = Field(default=10.0, gt=0)
    result_topic: bool = Field(
        default=False,
        description="Also publish each verdict on …/result as one line `<verdict>,<seq>,<unit_id>` "
        "for PLCs that do not parse JSON; same outbox record, acknowledged together.",
    )
    reconnect_max_s: float = Field(default=10.0, gt=0)
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        description="MQTT 5 session expiry: how long the broker keeps our subscriptions while away.",
    )


class OpcuaConfig(Section):
    """The station's OPC UA server for PLCs: a mirror of committed verdicts plus a ``Trigger`` method."""

    enabled: bool = Field(default=False, description="Serve OPC UA (needs the `opcua` extra).")
    host: str = "127.0.0.1"
    port: int = Field(default=4840, ge=1, le=65535)
    namespace: str = Field(
        default="urn:lineguard", min_length=1, max_length=256, description="Namespace URI of the nodes."
    )
    security: Literal["none", "Basic256Sha256_SignAndEncrypt"] = Field(
        default="none", description="none is for development only; production needs SignAndEncrypt."
    )
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password_file: Path | None = Field(default=None, description="File holding the OPC UA password.")
    cert_file: Path | None = Field(default=None, description="Server certificate (DER or PEM).")
    key_file: Path | None = Field(default=None, description="Server private key (PEM).")

    @model_validator(mode="after")
    def _complete(self) -> OpcuaConfig:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("opcua.username and opcua.password_file go together; set both or neither")
        if self.security != "none" and not (self.cert_file and self.key_file):
            raise ValueError(f"opcua.security {self.security} needs opcua.cert_file and opcua.key_file")
        return self


class OutboxConfig(Section):
    max_pending: int = Field(
        default=100_000, ge=10, description="Unacknowledged verdicts kept before refusing units."
    )
    warn_ratio: float = Field(default=0.8, gt=0, lt=1, description="Alert when this full.")
    retry_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds between tries to store verdicts again while the disk refuses.",
    )


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 = pick a free port.")
    token_file: Path | None = Field(default=None, description="Bearer token for mutating endpoints.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    live_fps: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="Most frames per second the live view (/v1/live.mjpeg) sends; it copies and encodes "
        "the latest decided frame only while someone watches, off the inspection thread.",
    )


class SamplingConfig(Section):
    enabled: bool = True
    uncertain_band: float = Field(default=0.15, ge=0, le=1)
    audit_share: float = Field(default=0.01, ge=0, le=1)
    classes: list[str] = []
    per_minute: int = Field(default=10, ge=0)
    per_hour: int = Field(default=200, ge=0)
    per_day: int = Field(default=2000, ge=0)
    max_queue: int = Field(default=5000, ge=1)
    dedup_distance: int = Field(
        default=6,
        ge=-1,
        le=63,
        description="pHash Hamming distance (of 63 bits) at or below which a frame is a near-duplicate "
        "of a recent sample and is not sent; -1 turns deduplication off.",
    )
    dedup_window: int = Field(default=256, ge=1, description="Recent samples compared for duplicates.")
    label_studio_url: str = ""
    label_studio_token_file: Path | None = None
    label_studio_project: str = "lineguard"
    drift_boost: float = Field(
        default=5.0, ge=1, description="A drift alarm multiplies the audit share by this ..."
    )
    drift_boost_s: float = Field(default=900.0, ge=0, description="... for this many seconds.")


class FrameStoreConfig(Section):
    """The station's recent frames on disk, behind ``GET /v1/verdicts/{seq}/image``."""

    enabled: bool = Field(default=True, description="Keep recent frames so a verdict's image can be seen.")
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=64 * 1024,
        description="Disk the frames (JPEG + JSON sidecar) may use; the oldest go first.",
    )
    max_age_s: float = Field(default=7 * 86400.0, gt=0, description="Frames older than this are deleted.")
    pass_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Share of PASS frames kept (evenly spread); every FAIL and NO_DECISION is kept.",
    )
    jpeg_quality: int = Field(default=85, ge=1, le=100, description="JPEG quality of stored frames.")
    folder: Path | None = Field(
        default=None, description="Where frames live; empty = <station.data_dir>/frames."
    )


class MonitoringConfig(Section):
    drift_window: int = Field(default=200, ge=10, description="Units per drift window.")
    psi_warning: float = Field(default=0.1, gt=0)
    psi_alarm: float = Field(default=0.25, gt=0)
    drift_every: int = Field(
        default=20, ge=1, description="Score the drift window every this many units (cost control)."
    )
    drift_bins: int = Field(
        default=10,
        ge=2,
        le=50,
        description="Reference-quantile bins for the PSI of image/confidence signals.",
    )
    rate_z_warning: float = Field(
        default=3.5,
        gt=0,
        description="Two-proportion |z| of a rate signal (class, FAIL, NO_DECISION) to warn.",
    )
    rate_z_alarm: float = Field(
        default=5.0, gt=0, description="Two-proportion |z| of a rate signal to alarm."
    )
    drift_clear_ratio: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Hysteresis: a warning clears below this share of the warning level; an alarm "
        "clears only below the warning level.",
    )


class GateConfig(Section):
    """How much worse than production a candidate may be on the frozen evaluation set."""

    max_map50_drop: float = Field(default=0.02, ge=0, le=1, description="mAP50 may fall this much.")
    max_escape_increase: float = Field(
        default=0.005, ge=0, le=1, description="Unit escape rate may rise this much."
    )
    max_overkill_increase: float = Field(
        default=0.01, ge=0, le=1, description="Unit overkill rate may rise this much."
    )
    max_no_decision_increase: float = Field(
        default=0.02, ge=0, le=1, description="NO_DECISION rate may rise this much."
    )
    max_latency_increase: float = Field(
        default=0.25, ge=0, description="Median latency may grow by this share of production's."
    )
    latency_slack_ms: float = Field(
        default=2.0, ge=0, description="Plus this many ms (timer noise on sub-ms models)."
    )


class SwapGuardConfig(Section):
    """Automatic rollback: bounds on the first units after a model swap."""

    window_units: int = Field(default=200, ge=1, description="Units watched after a swap.")
    min_units: int = Field(default=30, ge=1, description="Units needed before judging a rate.")
    max_no_decision_increase: float = Field(
        default=0.15, ge=0, le=1, description="NO_DECISION rate above the old model's by more = roll back."
    )
    max_error_rate: float = Field(default=0.02, ge=0, le=1, description="NO_DECISION/error share.")
    max_deadline_miss_rate: float = Field(default=0.05, ge=0, le=1, description="NO_DECISION/deadline share.")


class RegistryConfig(Section):
    root: Path = Field(
        default=Path("var/registry"),
        description="Registry folder: the artifacts stations fetch (blobs, cards, models/) and, with "
        "the file back-end, registry.sqlite.",
    )
    uri: str = Field(
        default="",
        max_length=512,
        description="Where the registry's records live: empty = registry.sqlite in root (no server); "
        "mlflow+http://HOST:PORT or mlflow+https://HOST = that MLflow tracking server's Model "
        "Registry (credentials from MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD).",
    )
    mlflow_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description="With an MLflow uri: prefix of lineguard's registered-model names in a shared MLflow.",
    )

    @field_validator("uri")
    @classmethod
    def _known_backend(cls, uri: str) -> str:
        if uri and not re.fullmatch(r"mlflow\+https?://[^\s/?#@]+(/[^\s?#]*)?", uri):
            raise ValueError(
                "must be empty (the file registry in registry.root) or mlflow+http://HOST:PORT / "
                "mlflow+https://HOST (an MLflow tracking server; credentials come from MLFLOW_TRACKING_* "
                "variables, never the URI)"
            )
        return uri

    follow: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$",
        description="Model whose production version to run (read from lineguard/models/<name>/production).",
    )
    token_file: Path | None = None
    public_url: str = Field(
        default="",
        description="Base URL of 'lineguard registry serve' put in rollout messages; empty = file:// URLs.",
    )
    ca_file: Path | None = Field(
        default=None,
        description="Station side: CA certificate (PEM) that signed the artifact server's https "
        "certificate (a private CA); unset = the system CAs.",
    )
    eval_set: Path | None = Field(
        default=None, description="Frozen evaluation set (YOLO dataset folder) for the promotion gate."
    )
    eval_split: str = Field(default="val", description="Split of eval_set the gate uses.")
    golden_dir: Path | None = Field(
        default=None, description="Golden images every new model must run on before use."
    )
    signing_key: Path | None = Field(
        default=None,
        description="Registry side: Ed25519 private key that signs every rollout "
        "('lineguard registry keygen'); unset = rollouts go out unsigned.",
    )
    public_keys: list[Path] = Field(
        default=[],
        max_length=2,
        description="Station side: pinned registry public keys; a model not signed by one is refused "
        "(two during a key rotation). Empty = unsigned models accepted, development profile only.",
    )
    max_model_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="A model download larger than this is refused."
    )
    max_card_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="A model card download larger than this is refused."
    )
    fetch_timeout_s: float = Field(
        default=300.0, gt=0, description="A model or card download taking longer than this is refused."
    )
    gate: GateConfig = GateConfig()
    swap_guard: SwapGuardConfig = SwapGuardConfig()


_STATION_REF = r"^[A-Za-z0-9_-]+/[A-Za-z0-9_-]+$"


class CanarySelection(Section):
    """Which followers take a new version first: named stations, or a share of them."""

    stations: list[str] = Field(
        default=[],
        max_length=1000,
        description="Canary stations as LINE/STATION; each must follow the model ('registry follow').",
    )
    fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Or this share of the followers (rounded up, at least one), spread evenly over "
        "them in LINE/STATION order.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> CanarySelection:
        bad = [s for s in self.stations if not re.fullmatch(_STATION_REF, s)]
        if bad:
            raise ValueError(f"canary station {bad[0][:80]!r} must be written LINE/STATION")
        if bool(self.stations) == bool(self.fraction):
            raise ValueError("name the canaries either by stations or by fraction (exactly one of them)")
        return self


class CanarySoak(Section):
    """How long the canaries run the new version before the rest of the fleet gets it."""

    units: int = Field(
        default=50, ge=1, le=1_000_000, description="Units each canary must decide with the new version."
    )
    minutes: float = Field(
        default=0.0, ge=0, le=7 * 24 * 60, description="And at least this long after the last canary swapped."
    )
    swap_timeout_s: float = Field(
        default=120.0, gt=0, description="Halt when a canary has not reported the new version by then."
    )
    timeout_minutes: float = Field(
        default=60.0, gt=0, description="Halt when the soak has not ended by then (not enough units)."
    )
    adoption_timeout_s: float = Field(
        default=300.0,
        ge=0,
        description="After the last wave, wait this long for every follower to report the version.",
    )


class CanaryGuards(Section):
    """Guard rails on the canaries' own verdicts, alerts and feedback; any one crossed halts."""

    max_fail_increase: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="The canaries' FAIL rate may exceed the reference's (the same line under the "
        "previous version) by this much.",
    )
    max_no_decision_increase: float = Field(
        default=0.05, ge=0, le=1, description="The NO_DECISION rate may exceed the reference's by this much."
    )
    max_deadline_miss_rate: float = Field(
        default=0.02, ge=0, le=1, description="Share of the canaries' units decided NO_DECISION/deadline."
    )
    max_model_errors: int = Field(
        default=0,
        ge=0,
        description="NO_DECISION/error verdicts plus model_refused, model_rollback and invalid_model "
        "alerts from the canaries.",
    )
    max_feedback_escapes: int = Field(
        default=0, ge=0, description="Escapes confirmed by feedback on units the new version passed."
    )
    reference_stations: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Non-canary followers whose verdicts (previous version) join the canaries' own "
        "verdicts from before the swap as the reference.",
    )
    min_reference_units: int = Field(
        default=30, ge=1, description="Reference units needed before the relative rails are judged."
    )


class CanaryPlan(Section):
    """A canary rollout (``lineguard registry rollout start --plan``): canaries, soak, guard rails."""

    canary: CanarySelection
    soak: CanarySoak = CanarySoak()
    guards: CanaryGuards = CanaryGuards()


def load_plan(path: Path | None, overrides: Mapping[str, Any] | None = None) -> CanaryPlan:
    """A rollout plan from YAML (or only ``overrides``), checked like a config file: one-line errors."""
    data = read_yaml_mapping(path, "rollout plan") if path is not None else {}
    if overrides:
        data = _merge(data, overrides)
    try:
        return CanaryPlan.model_validate(data)
    except ValidationError as exc:
        source = str(path) if path is not None else "the command line"
        raise ConfigError(f"rollout plan error in {source}: {validation_message(exc)}") from exc


class LineguardConfig(Section):
    station: StationConfig = StationConfig()
    camera: CameraConfig = CameraConfig()
    mode: Literal["continuous", "triggered"] = "continuous"
    model: ModelConfig = ModelConfig()
    policy: PolicyConfig = PolicyConfig()
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    http: HttpConfig = HttpConfig()
    opcua: OpcuaConfig = OpcuaConfig()
    jsonl_path: Path | None = Field(
        default=None,
        description=(
            "Where verdicts go when mqtt.enabled is false (default: station.data_dir/verdicts.jsonl); "
            "unused when MQTT delivers them."
        ),
    )
    sampling: SamplingConfig = SamplingConfig()
    frame_store: FrameStoreConfig = FrameStoreConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _follow_needs_mqtt(self) -> LineguardConfig:
        if self.registry.follow and not self.mqtt.enabled:
            raise ValueError(
                f"registry.follow ({self.registry.follow}) arrives over MQTT but mqtt.enabled is false; "
                "enable MQTT or set model.path instead"
            )
        return self

    @model_validator(mode="after")
    def _software_trigger_needs_triggered_mode(self) -> LineguardConfig:
        camera = self.camera
        if camera.kind == "gige" and camera.gige.trigger == "software" and self.mode != "triggered":
            raise ValueError(
                "camera.gige.trigger 'software' fires on the station's triggers, but mode is "
                f"'{self.mode}'; set mode: triggered or camera.gige.trigger: free_run"
            )
        return self

    @model_validator(mode="after")
    def _production_is_locked_down(self) -> LineguardConfig:
        if self.station.profile is not Profile.PRODUCTION:
            return self
        missing = []
        if self.mqtt.enabled and self.mqtt.tls is None:
            missing.append("mqtt.tls (broker TLS)")
        if self.mqtt.enabled and not (self.mqtt.username and self.mqtt.password_file):
            missing.append("mqtt.username + mqtt.password_file")
        if self.http.enabled and self.http.token_file is None:
            missing.append("http.token_file (API token)")
        opcua = self.opcua
        if opcua.enabled and (opcua.security == "none" or opcua.username is None):
            missing.append(
                "opcua.security: Basic256Sha256_SignAndEncrypt (opcua.cert_file + opcua.key_file), "
                "opcua.username + opcua.password_file"
            )
        if not self.registry.public_keys:
            missing.append(
                "registry.public_keys (the registry's public key, from 'lineguard registry keygen')"
            )
        if self.registry.public_url and not self.registry.public_url.startswith("https://"):
            missing.append("registry.public_url over https://")
        if missing:
            raise ValueError(
                "the production profile needs "
                + ", ".join(missing)
                + "; set them or use station.profile: development"
            )
        return self

    @property
    def topic_prefix(self) -> str:
        return f"lineguard/{self.station.line}/{self.station.station}/"

    @property
    def frame_store_dir(self) -> Path:
        """``frame_store.folder``, or ``<station.data_dir>/frames`` when it is not set."""
        return self.frame_store.folder or self.station.data_dir / "frames"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] not in LineguardConfig.model_fields:
            continue  # a plain LINEGUARD_X that is no config key (e.g. LINEGUARD_CACHE_DIR)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else raw
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping, or a one-line ``ConfigError`` saying what is wrong with it."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {path}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return loaded or {}


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LineguardConfig:
    """Build the config from defaults < YAML file < environment < explicit overrides."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    source = str(path) if path is not None else "defaults"
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return LineguardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config error in {source}: {validation_message(exc)}") from exc
