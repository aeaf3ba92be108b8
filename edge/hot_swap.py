"""Hot swap, receiving side: turn a desired-model message into a checked, warm ``Detector`` or a refusal.

The daemon keeps inspecting with the old model while this runs (off the frame path). A new model
is used only after it is downloaded (``file://`` or ``http(s)://`` with the registry token) into
``<data_dir>/models/<sha256>/``, hashes to the announced sha256, carries a card naming the same
model, keeps the running model's class list, loads as ONNX with the right input and output shapes,
warms up and runs the golden images. Any failure raises ``ModelError`` with the reason, so the
daemon keeps the old model and raises an alert. ``SwapGuard`` then watches the first units after
a swap and says when the NO_DECISION, error or deadline-miss rate calls for going back.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import numpy as np

from lineguard.config import LineguardConfig, SwapGuardConfig
from lineguard.errors import ConfigError, LineguardError, ModelError
from lineguard.inference import Detector, VerdictPolicy, check_golden
from lineguard.messages import ModelCard, Reason, Verdict, VerdictKind
from lineguard.secrets import read_secret

if TYPE_CHECKING:
    from lineguard.messages import DesiredModel

__all__ = [
    "ModelFollower",
    "SwapCheck",
    "SwapGuard",
    "fetch",
    "prepare_model",
    "remove_model",
]


def _token(cfg: LineguardConfig) -> str | None:
    path = cfg.registry.token_file
    if path is None:
        return None
    try:
        return read_secret(path, "registry.token_file")
    except ConfigError as exc:  # a refused swap is reported as one, the old model keeps running
        raise ModelError(str(exc)) from exc


def fetch(url: str, dest: Path, *, token: str | None = None, timeout_s: float = 30.0) -> str:
    """Copy ``url`` to ``dest`` atomically; return the sha256 of the bytes written."""
    parts = urlsplit(url)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        if parts.scheme == "file":
            source = Path(unquote(parts.path))
            try:
                with source.open("rb") as src, tmp.open("wb") as out:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            except FileNotFoundError as exc:
                raise ModelError(f"artifact not found: {source} (from {url})") from exc
        elif parts.scheme in ("http", "https"):
            import httpx

            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with httpx.stream("GET", url, headers=headers, timeout=timeout_s) as resp:
                    if resp.status_code == 401:
                        raise ModelError(
                            f"registry refused {url} (401): set registry.token_file to the server's token"
                        )
                    if resp.status_code != 200:
                        raise ModelError(f"registry answered {resp.status_code} for {url}")
                    with tmp.open("wb") as out:
                        for block in resp.iter_bytes():
                            digest.update(block)
                            out.write(block)
            except httpx.HTTPError as exc:
                raise ModelError(f"cannot download {url}: {exc}") from exc
        else:
            raise ModelError(
                f"unsupported model URL scheme {parts.scheme!r} in {url}; use file:// or http(s)://"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _download(desired: DesiredModel, folder: Path, token: str | None) -> tuple[Path, ModelCard]:
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / "model.onnx"
    card_path = folder / "model_card.json"
    ref = f"{desired.name}:{desired.version}"
    cached = onnx.is_file() and hashlib.sha256(onnx.read_bytes()).hexdigest() == desired.sha256
    if not cached:
        got = fetch(desired.url, onnx, token=token)
        if got != desired.sha256:
            onnx.unlink(missing_ok=True)
            raise ModelError(
                f"refused model {ref}: downloaded file has sha256 {got[:12]}…, the registry announced "
                f"{desired.sha256[:12]}…; the artifact is corrupted or was replaced"
            )
    fetch(desired.card_url, card_path, token=token)
    card = ModelCard.load(card_path)
    if (card.name, card.version, card.sha256) != (desired.name, desired.version, desired.sha256):
        raise ModelError(
            f"refused model {ref}: its card describes {card.ref} with sha256 {card.sha256[:12]}…; "
            "the registry's card and artifact do not belong together"
        )
    return onnx, card


def prepare_model(
    desired: DesiredModel,
    cfg: LineguardConfig,
    *,
    golden_dir: Path | None = None,
    expected_classes: Sequence[str] | None = None,
) -> Detector:
    """Fetch, verify, load, warm up and golden-check ``desired``; a ready detector or ``ModelError``."""
    ref = f"{desired.name}:{desired.version}"
    folder = cfg.station.data_dir / "models" / desired.sha256
    onnx, card = _download(desired, folder, _token(cfg))
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

    def _run(self) -> None:
        while (desired := self._queue.get()) is not None:
            ref = f"{desired.name}:{desired.version}"
            try:
                detector = prepare_model(
                    desired, self.cfg, golden_dir=self._golden, expected_classes=self._classes()
                )
            except ModelError as exc:
                self.refusals.append(str(exc))
                self._on_refused(desired, str(exc))
            except Exception as exc:  # the worker must survive anything and report it
                self.refusals.append(f"refused model {ref}: {type(exc).__name__}: {exc}")
                self._on_refused(desired, self.refusals[-1])
            else:
                self._swap(detector)
                self.previous, self.current = self.current, desired
                self.guard.swapped(desired.sha256)
            if self._queue.empty():
                self._idle.set()
