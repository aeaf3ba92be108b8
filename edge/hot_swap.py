"""Hot swap, receiving side: turn a desired-model message into a checked, warm ``Detector`` or a refusal.

The daemon keeps inspecting with the old model while this runs (off the frame path). A new model
is used only after its name and version pass strict patterns, its URLs lie under the configured
registry (``registry.public_url``, or ``file://`` inside ``registry.root``), its signed release
verifies with a pinned registry key (``registry.public_keys``; none pinned = development, accepted
with a warning), it is downloaded within size and time limits (the registry token sent only to
the registry) into ``<data_dir>/models/<sha256>/``, hashes to the signed sha256, carries the exact
card bytes that were signed, naming the same model, keeps the running model's class list, loads
as ONNX with the right input and output shapes, warms up and runs the golden images. Any failure
raises ``ModelError`` with a bounded reason (never file contents), so the daemon keeps the old
model and raises a ``model_refused`` alert. ``SwapGuard`` then watches the first units after a
swap and says when the NO_DECISION, error or deadline-miss rate calls for going back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import shutil
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

import numpy as np
from pydantic import ValidationError

from lineguard.config import LineguardConfig, SwapGuardConfig
from lineguard.errors import ConfigError, LineguardError, ModelError
from lineguard.inference import Detector, VerdictPolicy, check_golden
from lineguard.logs import Events
from lineguard.messages import MODEL_NAME, MODEL_VERSION, ModelCard, Reason, Release, Verdict, VerdictKind
from lineguard.releases import load_public_keys, verify_release
from lineguard.secrets import read_secret

if TYPE_CHECKING:
    from lineguard.messages import DesiredModel

__all__ = [
    "MAX_REASON_CHARS",
    "ModelFollower",
    "SwapCheck",
    "SwapGuard",
    "check_source",
    "fetch",
    "prepare_model",
    "remove_model",
    "trust",
]

MAX_REASON_CHARS = 1000  # a refusal reason goes into an alert and a log line: bounded, never file contents

event = Events(__name__)


def _token(cfg: LineguardConfig) -> str | None:
    path = cfg.registry.token_file
    if path is None:
        return None
    try:
        return read_secret(path, "registry.token_file")
    except ConfigError as exc:  # a refused swap is reported as one, the old model keeps running
        raise ModelError(str(exc)) from exc


def _origin(url: str) -> str:
    """Scheme and host of ``url``, bounded: enough to say where, never a path, query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}"[:100]


def check_source(url: str, cfg: LineguardConfig) -> None:
    """Refuse a URL outside the configured registry: another host, another scheme, or ``..``.

    With ``registry.public_url`` set only URLs under it (same scheme, host and port, path prefix)
    are fetched; without it the registry is a local folder and only ``file://`` paths inside
    ``registry.root`` are. The registry token goes only to URLs that pass this check.
    """
    parts = urlsplit(url)
    segments = unquote(parts.path).split("/")
    if (
        ".." in segments
        or "." in segments
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ModelError(
            f"URL on {_origin(url)} has '..', a query or credentials; the registry never sends one"
        )
    base = cfg.registry.public_url
    if base:
        want = urlsplit(base.rstrip("/") + "/")
        same = (parts.scheme, parts.netloc) == (want.scheme, want.netloc)
        if not same or not (parts.path + "/").startswith(want.path):
            raise ModelError(
                f"URL on {_origin(url)} is not under the configured registry {_origin(base)} "
                "(registry.public_url); the station fetches only from its registry"
            )
        return
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ModelError(
            f"URL on {_origin(url)} is refused: registry.public_url is empty, so only file:// paths inside "
            "registry.root are fetched; set registry.public_url to the artifact server"
        )
    root = cfg.registry.root.resolve()
    if not Path(unquote(parts.path)).resolve().is_relative_to(root):
        raise ModelError(
            "file:// URL outside registry.root is refused; the station fetches only from its registry"
        )


def _copy(blocks: Iterator[bytes], out: BinaryIO, digest: Any, max_bytes: int, deadline: float) -> None:
    size = 0
    for block in blocks:
        size += len(block)
        if size > max_bytes:
            raise ModelError(f"download is over the {max_bytes} byte limit; refused")
        if time.monotonic() > deadline:
            raise ModelError("download took longer than registry.fetch_timeout_s; refused")
        digest.update(block)
        out.write(block)


def fetch(
    url: str,
    dest: Path,
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
    max_bytes: int = 512 * 1024 * 1024,
    ca_file: Path | None = None,
) -> str:
    """Copy ``url`` to ``dest`` atomically, at most ``max_bytes`` within ``timeout_s``; return its sha256.

    Callers check the URL with ``check_source`` first: this function sends ``token`` to ``url``.
    An https server must present a certificate signed by ``ca_file`` (else by a system CA).
    """
    parts = urlsplit(url)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    deadline = time.monotonic() + timeout_s
    try:
        if parts.scheme == "file":
            source = Path(unquote(parts.path))
            try:
                with source.open("rb") as src, tmp.open("wb") as out:
                    _copy(iter(lambda: src.read(1 << 20), b""), out, digest, max_bytes, deadline)
            except OSError as exc:
                raise ModelError(
                    f"artifact {source.name} cannot be read: {exc.strerror or type(exc).__name__}"
                ) from exc
        elif parts.scheme in ("http", "https"):
            _http_get(url, tmp, token, digest, max_bytes, deadline, ca_file)
        else:
            raise ModelError(f"unsupported model URL scheme {parts.scheme[:20]!r}; use file:// or http(s)://")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error, if the connection failed in the handshake."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _http_get(
    url: str, tmp: Path, token: str | None, digest: Any, max_bytes: int, deadline: float, ca_file: Path | None
) -> None:
    import httpx

    from lineguard.mqtt_link import make_ssl_context

    where = _origin(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = max(0.1, deadline - time.monotonic())
    verify: ssl.SSLContext | bool = True
    if urlsplit(url).scheme == "https":
        try:
            verify = make_ssl_context(ca_file, None, None, key="registry.ca_file")
        except ConfigError as exc:  # a refused swap is reported as one, the old model keeps running
            raise ModelError(str(exc)) from exc
    try:
        with httpx.stream(
            "GET", url, headers=headers, timeout=timeout, follow_redirects=False, verify=verify
        ) as resp:
            if resp.status_code == 401:
                raise ModelError(
                    f"registry {where} refused the download (401): "
                    "set registry.token_file to the server's token"
                )
            if resp.status_code != 200:
                raise ModelError(f"registry {where} answered {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ModelError(
                    f"download is over the {max_bytes} byte limit ({declared} bytes announced); refused"
                )
            with tmp.open("wb") as out:
                _copy(resp.iter_bytes(), out, digest, max_bytes, deadline)
    except httpx.HTTPError as exc:
        tls = _tls_failure(exc)
        if tls is not None:
            why = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or type(tls).__name__
            raise ModelError(
                f"cannot download from {where}: its TLS certificate was refused ({str(why)[:100]}); "
                "set registry.ca_file to the CA that signed the artifact server's certificate"
            ) from exc
        raise ModelError(f"cannot download from {where}: {type(exc).__name__}") from exc


def _card(data: bytes, ref: str) -> ModelCard:
    try:
        return ModelCard.model_validate_json(data)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "<root>" for e in exc.errors()[:3])
        raise ModelError(
            f"refused model {ref}: its card is not a valid model card (problems at {where})"
        ) from exc


def _download(desired: DesiredModel, cfg: LineguardConfig, release: Release | None) -> tuple[Path, ModelCard]:
    folder = cfg.station.data_dir / "models" / desired.sha256
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / "model.onnx"
    card_path = folder / "model_card.json"
    ref = f"{desired.name}:{desired.version}"
    limits = cfg.registry
    token = _token(cfg)

    def get(url: str, dest: Path, max_bytes: int) -> str:
        return fetch(
            url,
            dest,
            token=token,
            timeout_s=limits.fetch_timeout_s,
            max_bytes=max_bytes,
            ca_file=limits.ca_file,
        )

    cached = onnx.is_file() and hashlib.sha256(onnx.read_bytes()).hexdigest() == desired.sha256
    if not cached:
        got = get(desired.url, onnx, limits.max_model_bytes)
        if got != desired.sha256:
            onnx.unlink(missing_ok=True)
            raise ModelError(
                f"refused model {ref}: downloaded file has sha256 {got[:12]}…, the registry announced "
                f"{desired.sha256[:12]}…; the artifact is corrupted or was replaced"
            )
    card_sha = get(desired.card_url, card_path, limits.max_card_bytes)
    if release is not None and card_sha != release.card_sha256:
        card_path.unlink(missing_ok=True)
        raise ModelError(
            f"refused model {ref}: its card (sha256 {card_sha[:12]}…) differs from the signed one "
            f"({release.card_sha256[:12]}…); the card was changed after the registry signed it"
        )
    card = _card(card_path.read_bytes(), ref)
    if (card.name, card.version, card.sha256) != (desired.name, desired.version, desired.sha256):
        raise ModelError(
            f"refused model {ref}: its card describes {card.ref[:140]} with sha256 {card.sha256[:12]}…; "
            "the registry's card and artifact do not belong together"
        )
    _download_variants(desired, card, folder, lambda url, dest: get(url, dest, limits.max_model_bytes))
    return onnx, card


def _download_variants(
    desired: DesiredModel, card: ModelCard, folder: Path, get: Callable[[str, Path], str]
) -> None:
    """Fetch the certified variant files the (signed) card names, from beside the model's artifact.

    The registry keeps every file as ``…/<sha256>``, so a variant's URL is the model's with its own
    sha256. A variant that cannot be fetched or hashes wrong is dropped, not fatal: the detector
    then runs fp32 and the station alerts (``precision_fallback``).
    """
    parts = urlsplit(desired.url)
    head, _, last = parts.path.rpartition("/")
    if last != desired.sha256:  # not the registry's layout: nothing to derive a URL from
        return
    for variant in card.variants:
        if not (variant.certified and variant.file):
            continue
        dest = folder / variant.file
        if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == variant.sha256:
            continue
        url = parts._replace(path=f"{head}/{variant.sha256}", query="", fragment="").geturl()
        try:
            got = get(url, dest)
            problem = None if got == variant.sha256 else f"downloaded file has sha256 {got[:12]}…"
        except ModelError as exc:
            problem = str(exc)
        if problem is not None:
            dest.unlink(missing_ok=True)
            event(
                logging.WARNING, "variant_fetch_failed", model=card.ref, variant=variant.name, error=problem
            )


def trust(desired: DesiredModel, cfg: LineguardConfig) -> Release | None:
    """The verified release of ``desired``; ``None`` when no key is pinned (development); else ``ModelError``.

    Names and versions must full-match ``MODEL_NAME`` / ``MODEL_VERSION`` and both URLs must pass
    ``check_source`` before anything is fetched or any path is built.
    """
    ref = f"{desired.name}:{desired.version}"[:200]
    if not (MODEL_NAME.fullmatch(desired.name) and MODEL_VERSION.fullmatch(desired.version)):
        raise ModelError(
            f"refused model {ref!r}: name and version must be letters, digits, '.', '_', '-' (version also "
            "'+'), starting with a letter or digit, at most 64 characters"
        )
    try:
        check_source(desired.url, cfg)
        check_source(desired.card_url, cfg)
    except ModelError as exc:
        raise ModelError(f"refused model {ref}: {exc}") from exc
    if not cfg.registry.public_keys:
        if desired.release is not None:
            event(logging.WARNING, "model_signature_unchecked", model=ref, fix="pin registry.public_keys")
        return None
    return verify_release(desired, load_public_keys(cfg.registry.public_keys))


def prepare_model(
    desired: DesiredModel,
    cfg: LineguardConfig,
    *,
    golden_dir: Path | None = None,
    expected_classes: Sequence[str] | None = None,
) -> Detector:
    """Check the origin and signature, fetch, verify, load, warm up and golden-check ``desired``.

    A ready detector or ``ModelError``. With no ``registry.public_keys`` pinned (development only)
    an unsigned model is accepted with a ``model_unverified`` warning in the log.
    """
    ref = f"{desired.name}:{desired.version}"
    try:
        release = trust(desired, cfg)
    except ConfigError as exc:  # a pinned key file went missing: refuse, keep the old model
        raise ModelError(f"refused model {ref}: {exc}") from exc
    onnx, card = _download(desired, cfg, release)
    if release is None:
        event(
            logging.WARNING,
            "model_unverified",
            model=ref,
            detail="no registry.public_keys pinned: the model's origin is not verified (development profile)",
        )
    if expected_classes is not None and list(card.classes) != list(expected_classes):
        raise ModelError(
            f"refused model {ref}: classes {card.classes} differ from the running model's "
            f"{list(expected_classes)}; a class change needs a new station setup, not a hot swap"
        )
    try:
        VerdictPolicy(card, cfg.policy)  # the station's threshold overrides must name its classes
        detector = Detector.for_station(onnx, cfg, card=card)
    except LineguardError as exc:
        raise ModelError(f"refused model {ref}: {exc}") from exc
    try:
        frame = np.full((card.input_size, card.input_size, 3), 114, np.uint8)
        for _ in range(max(1, cfg.model.warmup_runs)):
            detector.detect(frame)
        golden = golden_dir if golden_dir is not None else cfg.registry.golden_dir
        if golden is not None:
            problems = check_golden(detector, golden)
            if problems:
                raise ModelError(f"refused model {ref}: golden images failed: {'; '.join(problems[:3])}")
    except Exception as exc:
        detector.close()
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"refused model {ref}: warm-up failed: {type(exc).__name__}: {exc}") from exc
    return detector


def remove_model(cfg: LineguardConfig, sha256: str) -> None:
    """Delete a downloaded model folder (after it has been swapped out for good)."""
    shutil.rmtree(cfg.station.data_dir / "models" / sha256, ignore_errors=True)


@dataclass(frozen=True)
class SwapCheck:
    """The guard's judgement: ``rollback`` with the reason, and the rates it saw."""

    rollback: bool
    reason: str
    units: int
    no_decision_rate: float
    error_rate: float
    deadline_miss_rate: float


def _rates(outcomes: Sequence[tuple[bool, bool, bool]]) -> tuple[float, float, float]:
    n = max(1, len(outcomes))
    return (
        sum(o[0] for o in outcomes) / n,
        sum(o[1] for o in outcomes) / n,
        sum(o[2] for o in outcomes) / n,
    )


class SwapGuard:
    """Watches the units after a swap; ``observe`` returns a ``SwapCheck`` once a bound is crossed.

    Before a swap it keeps the last ``window_units`` outcomes as the old model's baseline; after
    ``swapped(sha256)`` it counts only verdicts of the new model, judges from ``min_units`` on and
    stops watching after ``window_units`` (the swap is then considered good).
    """

    def __init__(self, cfg: SwapGuardConfig) -> None:
        self.cfg = cfg
        self._baseline: deque[tuple[bool, bool, bool]] = deque(maxlen=cfg.window_units)
        self._after: list[tuple[bool, bool, bool]] = []
        self._watching: str | None = None
        self._baseline_nd = 0.0

    @property
    def watching(self) -> bool:
        return self._watching is not None

    def swapped(self, sha256: str) -> None:
        """A new model (by sha256) took over: freeze the baseline and start watching."""
        self._baseline_nd = _rates(self._baseline)[0] if len(self._baseline) >= self.cfg.min_units else 0.0
        self._after = []
        self._watching = sha256

    def observe(self, verdict: Verdict) -> SwapCheck | None:
        nd = verdict.verdict is VerdictKind.NO_DECISION
        outcome = (nd, nd and verdict.reason is Reason.ERROR, nd and verdict.reason is Reason.DEADLINE)
        if self._watching is None:
            self._baseline.append(outcome)
            return None
        if verdict.model is None or verdict.model.sha256 != self._watching:
            return None
        self._after.append(outcome)
        if len(self._after) < self.cfg.min_units:
            return None
        nd_rate, err_rate, miss_rate = _rates(self._after)
        reasons = []
        if nd_rate > self._baseline_nd + self.cfg.max_no_decision_increase:
            reasons.append(f"NO_DECISION rate {nd_rate:.1%} vs {self._baseline_nd:.1%} before the swap")
        if err_rate > self.cfg.max_error_rate:
            reasons.append(f"error rate {err_rate:.1%} > {self.cfg.max_error_rate:.1%}")
        if miss_rate > self.cfg.max_deadline_miss_rate:
            reasons.append(f"deadline misses {miss_rate:.1%} > {self.cfg.max_deadline_miss_rate:.1%}")
        check = SwapCheck(bool(reasons), "; ".join(reasons), len(self._after), nd_rate, err_rate, miss_rate)
        if reasons or len(self._after) >= self.cfg.window_units:
            self._watching = None
            self._baseline.clear()
            self._baseline.extend(self._after[-self.cfg.window_units :])
            return check
        return None


class ModelFollower:
    """Follows the desired model off the frame path: prepare in a worker thread, then swap; auto-rollback.

    ``submit`` (from the MQTT callback) queues the newest desired model; the worker prepares it
    (``prepare_model``, class list of the running model) and calls ``swap(detector)``, which the
    daemon performs between two units. A refusal calls ``on_refused(desired, reason)`` and the old
    model keeps running. ``observe(verdict)`` feeds the ``SwapGuard``; when it trips, the follower
    prepares the previous model again and calls ``on_rollback(reason)``.
    """

    def __init__(
        self,
        cfg: LineguardConfig,
        *,
        swap: Callable[[Detector], None],
        current_classes: Callable[[], Sequence[str] | None],
        on_refused: Callable[[DesiredModel, str], None] | None = None,
        on_rollback: Callable[[str], None] | None = None,
        golden_dir: Path | None = None,
    ) -> None:
        load_public_keys(cfg.registry.public_keys)  # a missing pinned key fails the start, not the first swap
        self.cfg = cfg
        self.guard = SwapGuard(cfg.registry.swap_guard)
        self._swap = swap
        self._classes = current_classes
        self._on_refused = on_refused or (lambda _d, _r: None)
        self._on_rollback = on_rollback or (lambda _r: None)
        self._golden = golden_dir
        self._queue: queue.Queue[DesiredModel | None] = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self.current: DesiredModel | None = None
        self.previous: DesiredModel | None = None
        self.refusals: list[str] = []
        self._thread = threading.Thread(target=self._run, name="lineguard-model-follower", daemon=True)
        self._thread.start()

    def submit(self, desired: DesiredModel) -> None:
        """Ask for ``desired``; a newer request replaces one not started yet; the current one is a no-op."""
        if self.current is not None and desired.sha256 == self.current.sha256 and desired == self.current:
            return
        self._idle.clear()
        while True:
            try:
                self._queue.put_nowait(desired)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def observe(self, verdict: Verdict) -> None:
        """Feed every committed verdict; a tripped guard rolls back to the previous model."""
        check = self.guard.observe(verdict)
        if check is None or not check.rollback:
            return
        if self.previous is None:
            self._on_rollback(f"{check.reason}; no previous model to return to")
            return
        self._on_rollback(check.reason)
        self.submit(self.previous)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """True once every submitted model has been swapped in or refused."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=5)
        self._thread.join(timeout=30)

    def _refused(self, desired: DesiredModel, reason: str) -> None:
        bounded = reason[:MAX_REASON_CHARS]
        self.refusals.append(bounded)
        event(
            logging.WARNING, "model_refused", model=f"{desired.name}:{desired.version}"[:200], reason=bounded
        )
        self._on_refused(desired, bounded)

    def _run(self) -> None:
        while (desired := self._queue.get()) is not None:
            ref = f"{desired.name}:{desired.version}"[:200]
            try:
                detector = prepare_model(
                    desired, self.cfg, golden_dir=self._golden, expected_classes=self._classes()
                )
            except ModelError as exc:
                self._refused(desired, str(exc))
            except Exception as exc:  # the worker must survive anything and report it
                self._refused(desired, f"refused model {ref}: {type(exc).__name__}: {exc}")
            else:
                self._swap(detector)
                self.previous, self.current = self.current, desired
                self.guard.swapped(desired.sha256)
            if self._queue.empty():
                self._idle.set()
