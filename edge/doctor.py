"""``lineguard doctor``: check a station's configuration and connections, and say how to fix them.

A commissioning engineer at the line wants one command that tells, in plain words, why a station
is not inspecting: a misspelled config key, a missing or tampered model, a broker that refuses the
credentials, a camera that does not open, an image-quality gate that would reject the line's own
frames (run over sample frames with the model's bounds). Each check is independent and never
raises; the command exits 1 when any check fails.
"""

from __future__ import annotations

import importlib.util
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import click

from lineguard.config import LineguardConfig, load_config
from lineguard.edge.cli import FRAMES_OPTION
from lineguard.errors import LineguardError
from lineguard.labeling import read_token
from lineguard.messages import ModelCard, sha256_file
from lineguard.mqtt_link import make_ssl_context
from lineguard.redact import mask_url
from lineguard.secrets import read_secret

__all__ = ["Check", "doctor", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check_model(cfg: LineguardConfig) -> Check:
    path = cfg.model.path
    if path is None:
        return Check(
            "model",
            False,
            "no model configured: every unit would be NO_DECISION/no_model",
            "set model.path to an ONNX file with model_card.json beside it",
        )
    if not path.is_file():
        return Check(
            "model",
            False,
            f"model file {path} does not exist",
            "fix model.path, or promote a model in the registry for this station",
        )
    try:
        card = ModelCard.load(path.parent / "model_card.json")
    except LineguardError as exc:
        return Check("model", False, str(exc), "export the model with 'lineguard export RUN'")
    if sha256_file(path) != card.sha256:
        return Check(
            "model",
            False,
            f"{path} does not match its model card's sha256 (modified or corrupt)",
            "fetch the model again from the registry",
        )
    conflict = _threshold_conflict(cfg, card)
    if conflict:
        return conflict
    return Check("model", True, f"{card.ref}, {len(card.classes)} classes, input {card.input_size} px")


def _threshold_conflict(cfg: LineguardConfig, card: ModelCard) -> Check | None:
    """Thresholds in force (card, then station overrides) too close to the floor for a review band."""
    policy = cfg.policy
    in_force = {c: policy.class_thresholds.get(c, card.threshold_for(c)) for c in card.classes}
    hidden = policy.hidden_band(in_force)
    if not hidden:
        return None
    listed = ", ".join(f"{k} {v:g}" for k, v in sorted(hidden.items()))
    return Check(
        "model",
        False,
        f"{card.ref} thresholds {listed} sit below policy.min_confidence {policy.min_confidence:g} + "
        f"policy.review_band {policy.review_band:g} = {policy.lowest_threshold:g}: boxes in their "
        "review band are dropped at the floor, so a doubtful unit PASSes instead of NO_DECISION/uncertain",
        f"recalibrate the model ('lineguard export RUN --max-escape ...' keeps thresholds at "
        f">= {policy.lowest_threshold:g}), set policy.class_thresholds to at least that, or lower "
        "policy.min_confidence / policy.review_band",
    )


def _check_broker(cfg: LineguardConfig, timeout_s: float) -> Check:
    """Connect the way the daemon does (same settings, TLS context, password file); on failure the
    daemon's own diagnosis says why."""
    if not cfg.mqtt.enabled:
        return Check("broker", True, "MQTT disabled: verdicts go to the JSON-lines file")
    from lineguard.mqtt_link import diagnose, link_settings, make_client

    try:
        settings = link_settings(cfg)
    except LineguardError as exc:
        return Check("broker", False, str(exc), "fix the file named above in the mqtt section")
    reasons: list[object] = []
    done = threading.Event()
    client = make_client(settings, client_id="")  # the daemon's id stays free: it may be running

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object = None) -> None:
        reasons.append(reason)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=10)
        client.loop_start()
        done.wait(timeout_s)
    except (OSError, ValueError):
        return Check(
            "broker",
            False,
            diagnose(settings, connack_missing=False, timeout_s=timeout_s),
            "start the broker or fix mqtt.host / mqtt.port / mqtt.tls",
        )
    finally:
        client.loop_stop()
        client.disconnect()
    if not reasons:
        return Check(
            "broker",
            False,
            diagnose(settings, connack_missing=True, timeout_s=timeout_s),
            "set mqtt.tls for a TLS listener, or use the plaintext port",
        )
    if getattr(reasons[0], "is_failure", False):
        return Check(
            "broker",
            False,
            f"{settings.addr} refused the connection: {reasons[0]}",
            "check mqtt.username and the password file",
        )
    return Check("broker", True, f"connected to {settings.addr} (MQTT {cfg.mqtt.protocol})")


def _check_http(name: str, url: str, timeout_s: float, fix: str) -> Check:
    shown = mask_url(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Check(name, True, f"{shown} answered {response.status}")
    except urllib.error.HTTPError as exc:
        return Check(name, exc.code < 500, f"{shown} answered {exc.code}", "" if exc.code < 500 else fix)
    except (urllib.error.URLError, OSError) as exc:
        reason = mask_url(str(getattr(exc, "reason", exc)))
        return Check(name, False, f"cannot reach {shown}: {reason}", fix)


def _check_label_studio(cfg: LineguardConfig, timeout_s: float) -> Check:
    """Reachable is not enough: a refused token loses every sample, so ask as the station will."""
    sampling = cfg.sampling
    base = sampling.label_studio_url.rstrip("/")
    reach = _check_http(
        "label studio", base + "/health", timeout_s, "start Label Studio or fix sampling.label_studio_url"
    )
    if not reach.ok:
        return reach
    if sampling.label_studio_token_file is None:
        return Check(
            "label studio",
            False,
            "sampling.label_studio_url is set but sampling.label_studio_token_file is not",
            "point sampling.label_studio_token_file at a file holding the Label Studio API token",
        )
    try:
        token = read_token(sampling.label_studio_token_file)
    except LineguardError as exc:
        return Check("label studio", False, str(exc), "fix sampling.label_studio_token_file")
    return _ask_with_credentials(
        "label studio",
        base,
        "/api/current-user/whoami",
        {"Authorization": f"Token {token}"},
        timeout_s,
        refused=f"the token in {sampling.label_studio_token_file}",
        refused_fix="copy the access token from Label Studio (Account & Settings) into that file",
    )


def _ask_with_credentials(
    name: str,
    base: str,
    path: str,
    headers: dict[str, str],
    timeout_s: float,
    *,
    refused: str,
    refused_fix: str,
    context: ssl.SSLContext | None = None,
    unreachable_fix: str = "",
) -> Check:
    """GET ``base + path`` as the station will; a refusal of ``refused`` (401/403) is its own finding."""
    url, shown = base + path, mask_url(base)
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout_s, context=context
        ) as response:
            return Check(name, True, f"{shown} accepts the token (answered {response.status})")
    except urllib.error.HTTPError as exc:
        if exc.code in {401, 403}:
            return Check(name, False, f"{shown} refuses {refused} ({exc.code})", refused_fix)
        return Check(name, False, f"{mask_url(url)} answered {exc.code}", "")
    except (urllib.error.URLError, OSError) as exc:
        reason = mask_url(str(getattr(exc, "reason", exc)))
        return Check(name, False, f"cannot reach {shown}: {reason}", unreachable_fix)


def _check_registry(cfg: LineguardConfig, timeout_s: float) -> Check:
    """The station fetches its models here: ask as it will (token, CA) and count the pinned keys."""
    reg = cfg.registry
    keys = f"{len(reg.public_keys)} pinned key(s)" if reg.public_keys else "no pinned key (development only)"
    if not reg.public_url:
        if reg.root.is_dir():
            return Check("registry", True, f"local registry {reg.root}; {keys}")
        return Check(
            "registry",
            False,
            f"registry.root {reg.root} does not exist",
            "set registry.public_url to the artifact server, or registry.root to the registry folder",
        )
    base = reg.public_url.rstrip("/")
    headers = {}
    try:
        if reg.token_file is not None:
            headers["Authorization"] = f"Bearer {read_secret(reg.token_file, 'registry.token_file')}"
        context = (
            make_ssl_context(reg.ca_file, None, None, key="registry.ca_file")
            if base.startswith("https://")
            else None
        )
    except LineguardError as exc:
        return Check("registry", False, str(exc), "fix the key named above")
    unreachable_fix = "start 'lineguard registry serve' or fix registry.public_url"
    if context is not None:
        unreachable_fix += "; a certificate error: set registry.ca_file to the CA that signed its certificate"
    found = _ask_with_credentials(
        "registry",
        base,
        "/v1/models",
        headers,
        timeout_s,
        refused="the token in registry.token_file",
        refused_fix="put the token of 'lineguard registry serve --token-file' into registry.token_file",
        context=context,
        unreachable_fix=unreachable_fix,
    )
    return replace(found, detail=f"{found.detail}; {keys}") if found.ok else found


def _needed_extras(cfg: LineguardConfig) -> list[tuple[str, str, str]]:
    """(module, extra, what needs it) for each optional package this configuration uses."""
    needed = [("cv2", "edge", "frame decoding"), ("prometheus_client", "edge", "metrics")]
    backend = cfg.model.backend
    if backend == "openvino" or cfg.model.precision == "bf16":
        needed.append(("openvino", "edge", "model.backend openvino / model.precision bf16"))
    elif backend == "onnxruntime" or importlib.util.find_spec("openvino") is None:
        needed.append(("onnxruntime", "edge", f"model.backend {backend}"))
    if cfg.mqtt.enabled:
        needed.append(("paho", "edge", "mqtt.enabled"))
    if cfg.http.enabled:
        needed += [("fastapi", "edge", "http.enabled"), ("uvicorn", "edge", "http.enabled")]
    if cfg.sampling.enabled and cfg.sampling.label_studio_url:
        needed.append(("label_studio_sdk", "label", "sampling to Label Studio"))
    return needed


def _check_extras(cfg: LineguardConfig) -> Check:
    """``edge run`` refuses a configuration whose packages are missing; say so before it starts."""
    missing = [(m, e, why) for m, e, why in _needed_extras(cfg) if importlib.util.find_spec(m) is None]
    if not missing:
        return Check("extras", True, "every package the configuration needs is installed")
    extras = ",".join(dict.fromkeys(e for _, e, _ in missing))
    return Check(
        "extras",
        False,
        "; ".join(f"{why} needs the Python package '{m}', which is not installed" for m, _, why in missing),
        f"pip install 'lineguard[{extras}]'",
    )


def _check_camera(cfg: LineguardConfig, timeout_s: float) -> Check:
    cam = cfg.camera
    if cam.kind == "synthetic":
        return Check("camera", True, f"synthetic line (seed {cam.synthetic_seed}, {cam.synthetic_imgsz} px)")
    if cam.kind in {"video", "folder"}:
        ok = Path(cam.uri).exists()
        return Check(
            "camera",
            ok,
            f"{cam.kind} {mask_url(cam.uri)!r} {'found' if ok else 'does not exist'}",
            "" if ok else "fix camera.uri",
        )
    import cv2

    source: int | str = int(cam.uri) if cam.uri.isdigit() else cam.uri
    capture = cv2.VideoCapture(source)
    try:
        got = capture.isOpened() and capture.read()[0]
    finally:
        capture.release()
    if got:
        return Check("camera", True, f"{cam.kind} {mask_url(cam.uri)!r} delivers frames")
    return Check(
        "camera",
        False,
        f"{cam.kind} {mask_url(cam.uri)!r} opened no frame within {timeout_s:.0f} s",
        "check the cable/URL, and that no other process holds the camera",
    )


def _check_quality(cfg: LineguardConfig, frames_dir: Path | None) -> Check:
    """Would the gate, with this model's bounds, reject the line's own frames?"""
    from lineguard.edge.quality_screen import screen_station

    card = None
    if cfg.model.path is not None:
        try:
            card = ModelCard.load(cfg.model.path.parent / "model_card.json")
        except LineguardError:
            card = None  # the model check says why; screen with the built-in bounds
    found = screen_station(cfg, card, frames_dir)
    return Check("quality", found.ok, found.detail, found.fix)


def run_checks(
    config_path: Path | None, *, timeout_s: float = 3.0, frames_dir: Path | None = None
) -> list[Check]:
    try:
        cfg = load_config(config_path)
    except LineguardError as exc:
        return [Check("config", False, str(exc), "fix the key named above")]
    checks: list[Callable[[], Check]] = [
        lambda: Check(
            "config",
            True,
            f"{config_path or 'defaults'}: station {cfg.station.line}/"
            f"{cfg.station.station}, profile {cfg.station.profile.value}",
        ),
        lambda: _check_model(cfg),
        lambda: _check_broker(cfg, timeout_s),
        lambda: _check_camera(cfg, timeout_s),
        lambda: _check_quality(cfg, frames_dir),
        lambda: _check_extras(cfg),
    ]
    if cfg.sampling.label_studio_url:
        checks.append(lambda: _check_label_studio(cfg, timeout_s))
    if cfg.registry.follow or cfg.registry.public_url:
        checks.append(lambda: _check_registry(cfg, timeout_s))
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:  # a doctor reports, it does not crash
            results.append(Check("internal", False, f"{type(exc).__name__}: {exc}"))
    return results


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Station config (YAML). Defaults + LINEGUARD_* variables when omitted.",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True)
@FRAMES_OPTION
def doctor(config_path: Path | None, timeout: float, frames_dir: Path | None) -> None:
    """Check a station's configuration and connections; say what is wrong and how to fix it."""
    results = run_checks(config_path, timeout_s=timeout, frames_dir=frames_dir)
    width = max(len(c.name) for c in results)
    for check in results:
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"{mark} {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"     {'':<{width}}  fix: {check.fix}")
    failed = sum(not c.ok for c in results)
    click.echo(f"{len(results) - failed} ok, {failed} failed")
    if failed:
        raise SystemExit(1)
