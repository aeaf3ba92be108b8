"""A fleet on one machine: one broker, one registry, N ``lineguard edge run`` processes, two canary rollouts.

The scale check of the canary design (issue 22): every station is a real process judging the
synthetic line at a low rate with a tiny signed model, following the model in the registry. A
good version goes through the canary stage to every station; a bad one (it FAILs every unit) is
halted at the canaries and rolled back. A ``Recorder`` on the broker, independent of the
registry, notes every retained ``…/model`` message, status and verdict, so a test can show that
the bad version never reached another station, and the figures (start-up, rollout and halt times,
broker traffic, memory) come from the same run. The test (tests/registry/test_fleet.py) and
``lineguard bench fleet`` both call ``run_fleet_check``; the broker is the caller's.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import lineguard
from lineguard.benchmarks.station_process import start_station
from lineguard.config import CanaryPlan, MqttConfig
from lineguard.inference import MAX_DET

__all__ = ["Fleet", "FleetReport", "Recorder", "fleet_markdown", "run_fleet_check"]

MODEL = "signal"
GOOD_V1, GOOD_V2, BAD = "1.0.0", "2.0.0", "3.0.0-bad"
_TOPIC = re.compile(r"lineguard/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/(status|verdict|model)")


class Recorder:
    """Everything the fleet and the registry say on the broker that matters to a rollout.

    ``took[(station, version)]`` is when a station first reported a version (status or verdict);
    ``announced[topic]`` every version a retained model message named there; ``traffic`` counts
    messages and bytes by kind. Subscribed like a dashboard (``mqtt`` names its credentials).
    """

    def __init__(self, mqtt_cfg: MqttConfig) -> None:
        from lineguard.mqtt_link import make_client, settings_for

        self.took: dict[tuple[str, str], float] = {}
        self.announced: dict[str, list[str]] = {}
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.largest: Counter[str] = Counter()
        self.verdict_sizes: dict[str, list[int]] = {}  # by model version
        self.sample = b""  # one verdict of the good version, to time what the registry's watch does
        self._lock = threading.Lock()
        self._ready = threading.Event()
        client_id = f"fleet-recorder-{uuid.uuid4().hex[:6]}"
        self.client = make_client(settings_for(mqtt_cfg, client_id), client_id=client_id)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [
                ("lineguard/+/+/status", 1),
                ("lineguard/+/+/verdict", 1),
                ("lineguard/+/+/model", 1),
                ("lineguard/models/+/production", 1),
            ]
        )
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(mqtt_cfg.host, mqtt_cfg.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("the fleet recorder could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        payload = bytes(msg.payload)
        match = _TOPIC.fullmatch(msg.topic)
        kind = match.group(3) if match else "model"
        with self._lock:
            self.messages[kind] += 1
            self.bytes[kind] += len(payload)
            self.largest[kind] = max(self.largest[kind], len(payload))
        if not payload:
            return
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if kind == "model":
            with self._lock:
                self.announced.setdefault(msg.topic, []).append(str(body["version"]))
            return
        model = body.get("model")
        if match is None or not isinstance(model, dict) or model.get("name") != MODEL:
            return
        if kind == "status" and body.get("state") != "online":
            return
        with self._lock:
            self.took.setdefault((f"{match.group(1)}/{match.group(2)}", str(model["version"])), time.time())
            if kind == "verdict" and str(model["version"]) == GOOD_V2 and body.get("verdict") == "PASS":
                self.sample = payload
            if kind == "verdict":
                self.verdict_sizes.setdefault(str(model["version"]), []).append(len(payload))

    def runs(self, station: str, version: str) -> bool:
        with self._lock:
            return (station, version) in self.took

    def stations_that_ran(self, version: str) -> list[str]:
        with self._lock:
            return sorted(s for s, v in self.took if v == version)

    def wait_all(self, stations: list[str], version: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(self.runs(s, version) for s in stations):
            if time.monotonic() > deadline:
                missing = [s for s in stations if not self.runs(s, version)]
                raise TimeoutError(f"{len(missing)} stations never reported {version}: {missing[:5]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Fleet:
    """``count`` station processes on ``line``, each following the registry at ``registry_root``.

    ``mqtt_for(station)`` adds per-station MQTT settings (credentials for an ACL broker).
    """

    workdir: Path
    registry_root: Path
    port: int
    count: int
    public_key: Path
    fps: float = 2.0
    line: str = "line1"
    mqtt_for: Callable[[str], dict[str, Any]] = lambda _s: {}
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"{self.line}/s{i:02d}" for i in range(1, self.count + 1)]

    def _config(self, index: int, station: str) -> Path:
        data = self.workdir / station
        data.mkdir(parents=True, exist_ok=True)
        cfg = {
            "station": {"line": self.line, "station": station, "data_dir": str(data)},
            "camera": {
                "kind": "synthetic",
                "fps": self.fps,
                "synthetic_imgsz": 160,
                "synthetic_seed": index,
                "synthetic_defect_rate": 0.1,
            },
            "model": {"threads": 1, "warmup_runs": 1, "backend": "onnxruntime"},
            # A loaded 2-core machine runs 20 of these: the deadline is not what this run checks.
            "policy": {"deadline_ms": 5000},
            "mqtt": {
                "port": self.port,
                "status_interval_s": 5,
                "reconnect_max_s": 2,
                **self.mqtt_for(station),
            },
            "http": {"enabled": False},
            "sampling": {"enabled": False},
            "frame_store": {"enabled": False},
            "registry": {"root": str(self.registry_root), "public_keys": [str(self.public_key)]},
        }
        path = data / "station.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start(self) -> None:
        checkout = str(Path(lineguard.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([checkout, *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        for index, name in enumerate(self.names, start=1):
            station = name.split("/")[1]
            config = self._config(index, station)
            self.procs[name] = start_station(config, self.workdir / station / "station.log", env)

    def rss_mb(self) -> list[float]:
        """Resident memory of each station process, in MiB (Linux)."""
        sizes = []
        for proc in self.procs.values():
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
            if found:
                sizes.append(int(found.group(1)) / 1024)
        return sizes

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass
class FleetReport:
    """The run's figures and per-station timeline (seconds from the fleet's start)."""

    stations: int
    fps: float
    canaries_good: list[str]
    canaries_bad: list[str]
    startup_s: float
    good_rollout_s: float
    good_soak_s: float
    good_wave2_s: float
    good_halted: bool
    bad_halted: bool
    bad_reason: str
    bad_halt_s: float
    bad_back_s: float
    ran_bad: list[str]
    announced_bad: list[str]
    verdict_parse_us: float
    rss_mb_median: float
    rss_mb_max: float
    duration_s: float
    broker: dict[str, dict[str, int]]
    registry_watch: dict[str, dict[str, dict[str, int]]]
    timeline: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"{'station':<12} " + "  ".join(f"{v:>10}" for v in (GOOD_V1, GOOD_V2, BAD))]
        for station, took in sorted(self.timeline.items()):
            cells = [f"{took[v]:>9.1f}s" if v in took else f"{'-':>10}" for v in (GOOD_V1, GOOD_V2, BAD)]
            role = " (canary)" if station in self.canaries_good or station in self.canaries_bad else ""
            out.append(f"{station:<12} " + "  ".join(cells) + role)
        return out


def _plan(stations: int, soak_units: int) -> CanaryPlan:
    return CanaryPlan.model_validate(
        {
            "canary": {"fraction": 0.15 if stations >= 7 else 1 / stations},
            "soak": {
                "units": soak_units,
                "swap_timeout_s": 120,
                "timeout_minutes": 5,
                "adoption_timeout_s": 180,
            },
            # The synthetic line is 10% defective; the bad version FAILs 100%: far past any margin,
            # while the same-behaving good version stays inside it however the units fall.
            "guards": {"max_fail_increase": 0.25, "max_no_decision_increase": 0.2, "min_reference_units": 20},
        }
    )


def _models(out: Path) -> dict[str, Path]:
    from lineguard.benchmarks.signal_model import build_signal_onnx

    folders = {GOOD_V1: out / "v1", GOOD_V2: out / "v2", BAD: out / "bad"}
    build_signal_onnx(folders[GOOD_V1], name=MODEL, version=GOOD_V1)
    build_signal_onnx(folders[GOOD_V2], name=MODEL, version=GOOD_V2, parent=GOOD_V1)
    build_signal_onnx(folders[BAD], name=MODEL, version=BAD, contrast=-0.5, parent=GOOD_V2)  # FAILs all
    return folders


def _parse_cost_us(payload: bytes, rounds: int = 2000) -> float:
    """Microseconds to check one verdict as the registry's watch does (``Verdict.from_json``)."""
    from lineguard.messages import Verdict

    if not payload:
        return 0.0
    start = time.perf_counter()
    for _ in range(rounds):
        Verdict.from_json(payload)
    return (time.perf_counter() - start) / rounds * 1e6


@contextmanager
def _running(fleet: Fleet) -> Iterator[Fleet]:
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def run_fleet_check(
    workdir: Path,
    port: int,
    *,
    stations: int = 20,
    fps: float = 2.0,
    soak_units: int = 10,
    mqtt_for: Callable[[str], dict[str, Any]] = lambda _s: {},
    registry_mqtt: dict[str, Any] | None = None,
    monitor_mqtt: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
) -> FleetReport:
    """Start the fleet on v1, roll out v2 (good) and then the bad version through canaries."""
    from lineguard.registry import Registry, Stage, publish_model
    from lineguard.registry.canary import CanaryRollout
    from lineguard.releases import Signer, generate_keypair

    workdir.mkdir(parents=True, exist_ok=True)
    reg = Registry(workdir / "registry")
    for folder in _models(workdir / "models").values():
        reg.add(folder, by="fleet", why="fleet check")
    private, public = generate_keypair(workdir / "keys")
    signer = Signer.from_file(private)
    fleet = Fleet(workdir / "stations", reg.root, port, stations, public, fps=fps, mqtt_for=mqtt_for)
    for name in fleet.names:
        line, station = name.split("/")
        reg.follow(line, station, MODEL, by="fleet")
    reg_mqtt = MqttConfig.model_validate({"port": port, **(registry_mqtt or {})})
    reg.promote(MODEL, GOOD_V1, Stage.PRODUCTION, by="fleet", why="first release")
    publish_model(reg, MODEL, reg_mqtt, signer=signer)
    recorder = Recorder(MqttConfig.model_validate({"port": port, **(monitor_mqtt or {})}))
    plan = _plan(stations, soak_units)
    try:
        t0 = time.time()
        with _running(fleet):
            say(f"fleet: starting {stations} stations at {fps:g} fps")
            recorder.wait_all(fleet.names, GOOD_V1, timeout_s=60 + 6 * stations)
            startup_s = time.time() - t0
            rss = sorted(fleet.rss_mb())
            say(f"fleet: all {stations} stations run {GOOD_V1} after {startup_s:.1f} s")
            results = []
            for version, why in (
                (GOOD_V2, "fleet check: a good version"),
                (BAD, "fleet check: FAILs every unit"),
            ):
                run = CanaryRollout(
                    reg, MODEL, version, plan, reg_mqtt, signer=signer, by="fleet", say=say
                ).start()
                promote = functools.partial(
                    reg.promote, MODEL, version, Stage.PRODUCTION, by="fleet", force=True, why=why
                )
                try:
                    results.append(run.run(promote))
                finally:
                    run.close()
            time.sleep(3)  # a station that wrongly took the bad version would have reported it by now
            duration_s = time.time() - t0
            dead = fleet.dead()
            if dead:
                raise RuntimeError(
                    f"station processes died: {dead[:5]}; see {fleet.workdir}/<station>/station.log"
                )
    finally:
        recorder.stop()
    good, bad = results
    steps_g, steps_b = good.steps, bad.steps
    timeline: dict[str, dict[str, float]] = {}
    for (station, version), at in recorder.took.items():
        timeline.setdefault(station, {})[version] = round(at - t0, 2)
    return FleetReport(
        stations=stations,
        fps=fps,
        canaries_good=good.canaries,
        canaries_bad=bad.canaries,
        startup_s=round(startup_s, 2),
        good_rollout_s=round(steps_g.get("done", 0) - steps_g["promoted"], 2),
        good_soak_s=round(steps_g.get("soak_passed", 0) - steps_g["wave1_published"], 2),
        good_wave2_s=round(steps_g.get("done", 0) - steps_g.get("soak_passed", 0), 2),
        good_halted=good.halted,
        bad_halted=bad.halted,
        bad_reason=bad.reason,
        bad_halt_s=round(steps_b.get("halted", 0) - steps_b["wave1_published"], 2),
        bad_back_s=round(steps_b.get("rolled_back", 0) - steps_b["wave1_published"], 2),
        ran_bad=recorder.stations_that_ran(BAD),
        announced_bad=sorted(t for t, versions in recorder.announced.items() if BAD in versions),
        verdict_parse_us=round(_parse_cost_us(recorder.sample), 1),
        rss_mb_median=round(rss[len(rss) // 2], 1) if rss else 0.0,
        rss_mb_max=round(rss[-1], 1) if rss else 0.0,
        duration_s=round(duration_s, 1),
        registry_watch={"good": good.watched, "bad": bad.watched},
        broker={
            "messages": dict(recorder.messages),
            "bytes": dict(recorder.bytes),
            "largest_bytes": dict(recorder.largest),
            "verdict_median_bytes": {
                v: sorted(sizes)[len(sizes) // 2] for v, sizes in sorted(recorder.verdict_sizes.items())
            },
        },
        timeline=timeline,
    )


def fleet_markdown(report: FleetReport, origin: dict[str, Any]) -> str:
    """The report as Markdown: provenance, the figures, the broker's traffic, the per-station timeline."""
    from lineguard.provenance import provenance_markdown

    b = report.broker
    rows = [
        f"| {kind} | {b['messages'].get(kind, 0)} | {b['bytes'].get(kind, 0) / 1024:.0f} | "
        f"{b['bytes'].get(kind, 0) / max(1, b['messages'].get(kind, 0)):.0f} | "
        f"{b['largest_bytes'].get(kind, 0)} |"
        for kind in sorted(b["messages"])
    ]
    watch = [
        f"| {name} | {sum(w.get('messages', {}).values())} | {sum(w.get('bytes', {}).values()) / 1024:.0f} |"
        for name, w in report.registry_watch.items()
    ]
    lines = [
        f"# Fleet: {report.stations} station processes, canary rollouts",
        "",
        *provenance_markdown(origin),
        f"{report.stations} `lineguard edge run` processes on one Mosquitto, synthetic camera at "
        f"{report.fps:g} fps, the hand-built signal model (160 px, onnxruntime, 1 thread), one file "
        f"registry; canaries {', '.join(report.canaries_good)}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| fleet start-up (first process started -> every station reports {GOOD_V1}) "
        f"| {report.startup_s:.1f} s |",
        f"| good rollout, promotion -> every station reports {GOOD_V2} | {report.good_rollout_s:.1f} s |",
        f"| of which the canary soak (wave 1 -> soak passed) | {report.good_soak_s:.1f} s |",
        f"| of which wave 2 (soak passed -> every follower reports {GOOD_V2}) "
        f"| {report.good_wave2_s:.1f} s |",
        f"| bad version: wave 1 -> halt decided | {report.bad_halt_s:.1f} s |",
        f"| bad version: wave 1 -> canaries report the previous version again | {report.bad_back_s:.1f} s |",
        f"| halt reason | {report.bad_reason} |",
        f"| stations that ever reported the bad version | {', '.join(report.ran_bad) or 'none'} |",
        f"| topics that ever carried the bad version | {', '.join(report.announced_bad) or 'none'} |",
        f"| registry: checking one PASS verdict (pydantic) | {report.verdict_parse_us:.0f} µs |",
        f"| station memory (RSS), median / max | {report.rss_mb_median:.0f} / {report.rss_mb_max:.0f} MiB |",
        "",
        f"Broker traffic seen by a subscriber to every status, verdict and model topic over the "
        f"{report.duration_s:.0f} s run:",
        "",
        "| kind | messages | KiB | mean bytes | largest bytes |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Median verdict size by the version that decided it: "
        + ", ".join(f"{v} {n} bytes" for v, n in b["verdict_median_bytes"].items())
        + f" (the bad version reports up to {MAX_DET} boxes per unit).",
        "",
        "What the registry itself received while it watched (every status, the canaries' and reference "
        "stations' verdicts, alerts and feedback):",
        "",
        "| rollout | messages | KiB |",
        "|---|---|---|",
        *watch,
        "",
        "Seconds from the fleet's start at which each station first reported a version:",
        "",
        "```",
        *report.lines(),
        "```",
        "",
    ]
    return "\n".join(lines)
