"""Test peers for the flywheel: a line whose lighting the test changes, ground truth, QA staff, figures.

``ShiftingLine`` is the product's synthetic camera with two knobs the physical world has and a
config file does not: the condition of the line changes while the station runs (another lamp, a
new supplier), and the line can stand still (no parts arrive) while a model is retrained. Every
frame index records the condition it was rendered under, so each unit's ground truth is
``render_unit(seed, index, condition=...)``. ``Tally`` scores verdicts against that truth the way
the registry's gate does (NO_DECISION is not a correct decision). ``label_from_truth`` plays QA
staff in Label Studio: it annotates exactly the tasks the station sent, box for box from ground
truth. ``write_figures`` puts the run's figures, with their provenance, into the folder the test
names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from lineguard.config import CameraConfig
from lineguard.edge.sources import SyntheticSource
from lineguard.messages import Verdict, VerdictKind
from lineguard.monitoring import Metrics
from lineguard.provenance import provenance, provenance_markdown
from lineguard.spread import min_median_max
from lineguard.synthetic import condition_named, render_unit
from support.label_studio import GTBox, ls_result

__all__ = ["ShiftingLine", "Tally", "label_from_truth", "tasks_of", "write_figures"]

Image = npt.NDArray[np.uint8]


class ShiftingLine(SyntheticSource):
    """The synthetic line, whose condition the test switches and which can stand still."""

    def __init__(self, cfg: CameraConfig, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        self._knobs = threading.Lock()
        self._moving = threading.Event()
        self.condition_of: dict[int, str] = {}  # frame index -> condition it was rendered under

    def run_under(self, condition: str) -> None:
        """From the next frame on, parts look like ``condition``; the line moves."""
        cond = condition_named(condition)
        with self._knobs:
            self._condition = cond
        self._moving.set()

    def halt(self) -> None:
        """No parts arrive until ``run_under`` is called again."""
        self._moving.clear()

    def _grab(self, buf: Image | None) -> Image | None:
        if not self._moving.is_set():
            return None  # the capture thread waits 50 ms and asks again
        with self._knobs:
            self.condition_of[self._index] = self._condition.name
            return super()._grab(buf)

    def truth(self, index: int) -> tuple[GTBox, ...]:
        cfg = self.cfg
        unit = render_unit(
            cfg.synthetic_seed,
            index,
            imgsz=cfg.synthetic_imgsz,
            defect_rate=cfg.synthetic_defect_rate,
            condition=condition_named(self.condition_of[index]),
        )
        return unit.labels


def frame_index(unit_id: str) -> int:
    return int(unit_id.rsplit("-f", 1)[1])


@dataclass
class Tally:
    """Unit-level outcomes of one phase against ground truth (rates are shares of units)."""

    units: int = 0
    correct: int = 0
    escapes: int = 0  # defective unit judged PASS
    overkill: int = 0  # good unit judged FAIL
    no_decision: int = 0
    defective: int = 0
    model: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, verdicts: list[Verdict], truth: Callable[[int], tuple[GTBox, ...]]) -> Tally:
        tally = cls()
        for v in verdicts:
            bad = bool(truth(frame_index(v.unit_id)))
            tally.units += 1
            tally.defective += bad
            tally.model.add("-" if v.model is None else v.model.version)
            if v.verdict is VerdictKind.NO_DECISION:
                tally.no_decision += 1
            elif bad and v.verdict is VerdictKind.PASS:
                tally.escapes += 1
            elif not bad and v.verdict is VerdictKind.FAIL:
                tally.overkill += 1
            else:
                tally.correct += 1
        return tally

    @property
    def accuracy(self) -> float:
        return self.correct / self.units if self.units else 0.0

    def figures(self) -> dict[str, Any]:
        good = self.units - self.defective
        return asdict(self) | {
            "model": sorted(self.model),
            "accuracy": round(self.accuracy, 4),
            "escape_rate": round(self.escapes / self.defective, 4) if self.defective else None,
            "overkill_rate": round(self.overkill / good, 4) if good else None,
            "no_decision_rate": round(self.no_decision / self.units, 4) if self.units else None,
        }

    def line(self) -> str:
        f = self.figures()
        return (
            f"{self.units} units ({self.defective} defective), model {'/'.join(f['model'])}: "
            f"accuracy {100 * self.accuracy:.1f}%, escape {f['escape_rate']}, "
            f"overkill {f['overkill_rate']}, NO_DECISION {f['no_decision_rate']}"
        )


def tasks_of(url: str, token: str, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project with its predictions and annotations."""
    tasks: list[dict[str, Any]] = []
    page = 1
    while True:
        resp = httpx.get(
            f"{url}/api/tasks",
            params={"project": project_id, "fields": "all", "page_size": 100, "page": page},
            headers={"Authorization": f"Token {token}"},
            timeout=60,
        )
        if resp.status_code == 404:  # past the last page
            return tasks
        resp.raise_for_status()
        body = resp.json()
        tasks += body["tasks"]
        if len(tasks) >= int(body.get("total", 0)) or not body["tasks"]:
            return tasks
        page += 1


def label_from_truth(
    url: str, token: str, tasks: list[dict[str, Any]], truth: Callable[[int], tuple[GTBox, ...]], size: int
) -> int:
    """QA staff at work: annotate each task from the unit's ground truth; return the boxes drawn."""
    drawn = 0
    with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=60) as http:
        for task in tasks:
            boxes = truth(frame_index(task["data"]["unit_id"]))
            resp = http.post(
                f"{url}/api/tasks/{task['id']}/annotations",
                json={"result": ls_result(boxes, size), "was_cancelled": False},
            )
            if resp.status_code != 201:
                raise RuntimeError(f"annotation of task {task['id']} refused: {resp.text[:200]}")
            drawn += len(boxes)
    return drawn


PHASES = {
    "condition_a_before": "condition A (nominal)",
    "condition_b_before_retrain": "condition B (shifted), before retraining",
    "condition_b_after_retrain": "condition B, after retrain + hot swap",
    "condition_a_after_retrain": "condition A, after retrain",
}
RATES = ("accuracy", "escape_rate", "overkill_rate", "no_decision_rate")


def write_figures(folder: Path, seed: int, figures: dict[str, Any], markdown: str) -> None:
    """This seed's run as ``flywheel-seed<N>.{json,md}``, then the spread over every seed run so far.

    Both open with the run's provenance; tests run on uncommitted code, marked ``-dirty``.
    """
    origin = provenance(allow_dirty=True)
    folder.mkdir(parents=True, exist_ok=True)
    run = {"provenance": origin, "seed": seed} | figures
    (folder / f"flywheel-seed{seed}.json").write_text(json.dumps(run, indent=2) + "\n")
    title, _, rest = markdown.partition("\n")
    header = [f"{title} (seed {seed})", "", *provenance_markdown(origin)]
    (folder / f"flywheel-seed{seed}.md").write_text("\n".join([*header, rest.lstrip("\n")]))
    write_spread(folder)


def write_spread(folder: Path) -> dict[str, Any]:
    """``flywheel.{json,md}``: min / median / max of each phase's rates over the seed runs in ``folder``.

    One run of a loop with a real-time camera is one sample: unit counts and labeled frames shift
    with timing, so the published figure is the spread, with every run's own row beside it.
    """
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("flywheel-seed*.json"))]
    refused = [r["seed"] for r in runs if not r["gate"]["passed"]]
    spread = {
        phase: {
            rate: min_median_max([r[phase][rate] for r in runs if r[phase] and r[phase][rate] is not None])
            for rate in RATES
        }
        for phase in PHASES
    }
    summary = {"seeds": [r["seed"] for r in runs], "gate_refused": refused, "spread": spread, "runs": runs}
    (folder / "flywheel.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "flywheel.md").write_text(_spread_markdown(runs, spread, refused))
    return summary


def _spread_markdown(runs: list[dict[str, Any]], spread: dict[str, Any], refused: list[int]) -> str:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f} %"

    def mmm(s: dict[str, float | None]) -> str:
        return f"{pct(s['median'])} ({pct(s['min'])} – {pct(s['max'])})"

    lines = [
        "# Flywheel: line shift -> drift alarm -> QA labels -> retrain -> hot swap -> recovery",
        "",
        f"Written by `tests/test_flywheel.py` over {len(runs)} seed(s) "
        f"({', '.join(str(r['seed']) for r in runs)}; `LINEGUARD_FLYWHEEL_SEED=N`), real Mosquitto, real "
        "Label Studio, YOLOv8n at 160 px on the CPU. Unit accuracy = correct PASS/FAIL over all units; "
        "NO_DECISION counts as not correct. Median (min – max) over the seeds"
        + (
            f"; the after-retraining rows leave out seed(s) {', '.join(map(str, refused))}, whose gate "
            "refused the retrained model (the station kept 1.0.0):"
            if refused
            else ":"
        ),
        "",
        "| phase | accuracy | escape | overkill | NO_DECISION |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | " + " | ".join(mmm(spread[phase][rate]) for rate in RATES) + " |"
            for phase, label in PHASES.items()
        ),
        "",
        "Each run (accuracy / escape / overkill per phase, in the order above):",
        "",
        "| seed | revision | date | " + " | ".join(PHASES.values()) + " |",
        "|---|---|---|" + "---|" * len(PHASES),
    ]
    for r in runs:
        cells = [
            f"{pct(r[p]['accuracy'])} / {pct(r[p]['escape_rate'])} / {pct(r[p]['overkill_rate'])}"
            if r[p]
            else f"gate refused: {r['gate']['summary']}"
            for p in PHASES
        ]
        origin = r["provenance"]
        lines.append(
            f"| {r['seed']} | {origin['git_revision']} | {origin['date'][:10]} | " + " | ".join(cells) + " |"
        )
    m = runs[-1]["provenance"]["machine"]
    machine = f"{m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores"
    lines += ["", f"Each run's details and command: `flywheel-seed<N>.md`. Machine: {machine}.", ""]
    return "\n".join(lines)
