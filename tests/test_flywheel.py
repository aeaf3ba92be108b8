"""The whole loop on real parts: the line shifts, the station notices, QA labels, a retrained model recovers.

One station (the edge daemon, real Mosquitto, real ONNX models) follows model ``flywheel`` through
the registry's retained rollout message. Model 1.0.0 is trained on condition A (``nominal``) of
the synthetic line. The line then switches to condition B (``shifted``: another lamp and a new
defect appearance): unit accuracy drops and drift detection raises an alarm, which multiplies the
audit share, so doubtful and audited frames reach a real Label Studio with the model's boxes as
predictions. The test plays QA staff and labels exactly those tasks from ground truth. ``retrain``
(what ``lineguard retrain --auto-promote`` runs) pulls them as a new dataset version (the
condition-A training set + the labeled frames), fine-tunes 1.0.0, gates the candidate against
production on a frozen condition-B evaluation set, promotes and publishes; the running station
hot-swaps and accuracy on B recovers. The figures go to ``var/results/flywheel-seed<N>.{md,json}``
and the spread over every seed run there to ``flywheel.{md,json}``; to publish them, run the test
with ``LINEGUARD_RESULTS_DIR=benchmarks/results`` for seeds 0, 1 and 2.

The line stands still while the model trains (``ShiftingLine.halt``), so inference and training
do not share the two CPU cores; the station keeps running throughout.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.flywheel import PHASES, ShiftingLine, Tally, label_from_truth, tasks_of, write_figures
from support.label_studio import LabelStudioInfo
from support.mosquitto import Broker
from support.mqtt import Subscriber, wait_until

from lineguard.config import LineguardConfig, MqttConfig, PolicyConfig
from lineguard.edge import EdgeDaemon
from lineguard.labeling import LabelStudioClient
from lineguard.messages import Verdict
from lineguard.registry import Registry, Stage, publish_model
from lineguard.retrain import retrain
from lineguard.synthetic import CLASSES
from lineguard.training.calibrate import calibrate_run
from lineguard.training.config import TrainConfig
from lineguard.training.export import export_run
from lineguard.training.synthetic_dataset import SYNTHETIC_LINE_AUGMENT, write_synthetic_dataset
from lineguard.training.train import train

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

ROOT = Path(__file__).resolve().parents[1]
# A test never rewrites tracked files: published figures change only when someone asks for it.
RESULTS = ROOT / os.environ.get("LINEGUARD_RESULTS_DIR", "var/results")
NAME = "flywheel"
IMGSZ = 160
DEFECT_RATE = 0.5
# Published figures are a spread over seeds: run with LINEGUARD_FLYWHEEL_SEED=0, 1, 2 (see write_spread).
SEED = int(os.environ.get("LINEGUARD_FLYWHEEL_SEED", "0"))
TRAIN_SEED, EVAL_SEED, LINE_SEED = 101 + SEED, 202 + SEED, 303 + SEED  # three disjoint sets of parts
# Condition A: 600 to train, 200 validation (the drift reference) and 200 to calibrate. The demo's
# recipe (issue #17 item 4): 150 units and 30 epochs with mosaic left 14 % of defective units escaping.
TRAIN_IMAGES = 800
EVAL_IMAGES = 120  # condition B, frozen evaluation set of the gate (its 60-unit val split)
TRAIN_A = TrainConfig(
    seed=SEED,
    epochs=12,
    imgsz=IMGSZ,
    batch=8,
    nbs=16,
    warmup_epochs=1,
    optimizer="AdamW",
    lr0=0.003,
    mosaic=0.0,  # mosaic halves a 160 px unit and its 2 px defects
    workers=0,
    plots=False,
    threads=1,  # two torch threads fight anything else on a 2-core machine (20x slower seen)
    augment=SYNTHETIC_LINE_AUGMENT,
)
MAX_ESCAPE = 0.05  # threshold calibration target; retrain calibrates the candidate the same way
MAX_OVERKILL = 0.05  # what a model that meets its escape target may cost in good units judged FAIL
# The loop is under test, not the first model's quality (issue #17 item 4): a model that misses its
# target goes live only through the audited override, and the history must show it.
ACCEPTS_MISS = "flywheel test: the loop is measured, not the small model's calibration"
# These small models' confidences sit near the 0.05 floor, so a review band above it would push the
# calibrated thresholds to 0.15 and most units into NO_DECISION/uncertain: the station and its
# calibration run without one, as before the band was made reachable (issue #17, item 4).
POLICY = PolicyConfig(review_band=0.0)
FINE_TUNE = TRAIN_A.model_copy(update={"lr0": 0.001})
RETRAIN_EPOCHS = 10  # fine-tuning: 5 took condition B from 52% to 78%, 13 points short of A
UNITS_A = 150  # units judged on condition A before the shift
UNITS_B = 250  # at least this many on condition B before retraining ...
MAX_UNITS_B = 800  # ... and more, up to this, until enough frames went to QA
MIN_LABELED = 80  # frames QA labels (audited + doubtful) before retraining
UNITS_AFTER = 250  # units judged on condition B by the retrained model


def _station(tmp: Path, broker: Broker, ls: LabelStudioInfo, project: str, eval_set: Path) -> LineguardConfig:
    token = tmp / "ls_token"
    token.write_text(ls.token + "\n")
    return LineguardConfig.model_validate(
        {
            "station": {"line": "line1", "station": "st1", "data_dir": str(tmp / "station")},
            "camera": {
                "kind": "synthetic",
                "fps": 25,
                "synthetic_seed": LINE_SEED,
                "synthetic_imgsz": IMGSZ,
                "synthetic_defect_rate": DEFECT_RATE,
                "watchdog_s": 3600,  # the line stands still during retraining: no camera alarm
            },
            "model": {"threads": 1, "warmup_runs": 1},
            "policy": POLICY.model_dump(),
            "mqtt": {"host": broker.host, "port": broker.port},
            "http": {"enabled": False},
            # A drift alarm multiplies the 10 % audit share by 5; caps high enough for a test minute.
            "sampling": {
                "audit_share": 0.1,
                "drift_boost": 5.0,
                "per_minute": 10_000,
                "per_hour": 150,  # at most 150 frames reach QA in this test (uploads and training time)
                "label_studio_url": ls.url,
                "label_studio_token_file": str(token),
                "label_studio_project": project,
            },
            "monitoring": {"drift_window": 100, "drift_every": 10},
            "registry": {
                "root": str(tmp / "registry"),
                "eval_set": str(eval_set),
                # 60 evaluation units: one unit moves a rate by 2-4 points, and CPU timing is noisy.
                "gate": {
                    "max_map50_drop": 0.02,
                    "max_escape_increase": 0.0,
                    "max_overkill_increase": 0.1,
                    "max_no_decision_increase": 0.1,
                    "max_latency_increase": 1.0,
                    "latency_slack_ms": 10.0,
                },
            },
        }
    )


class _Run:
    """The running station and what the line controller saw of it on MQTT."""

    def __init__(self, cfg: LineguardConfig, broker: Broker) -> None:
        self.line = ShiftingLine(cfg.camera)
        self.daemon = EdgeDaemon(cfg, source=self.line)
        prefix = cfg.topic_prefix
        self.verdict_sub = Subscriber(broker.host, broker.port, prefix + "verdict").start()
        self.alert_sub = Subscriber(broker.host, broker.port, prefix + "alert").start()
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()

    def verdicts(self) -> list[Verdict]:
        by_seq: dict[int, Verdict] = {}
        for payload in self.verdict_sub.payloads():
            v = Verdict.model_validate(payload)
            by_seq.setdefault(v.seq, v)
        return [by_seq[s] for s in sorted(by_seq)]

    def phase(self, condition: str, version: str) -> list[Verdict]:
        cond = self.line.condition_of
        return [
            v
            for v in self.verdicts()
            if v.model is not None
            and v.model.version == version
            and cond.get(int(v.unit_id.rsplit("-f", 1)[1])) == condition
        ]

    def run(self, condition: str, version: str, units: int, until: Any = None, most: int = 0) -> None:
        """Let ``units`` parts (more while ``until()`` is false, at most ``most``) pass; then halt."""
        self.line.run_under(condition)

        def done() -> bool:
            n = len(self.phase(condition, version))
            return n >= units and (until is None or until() or n >= most)

        deadline = time.monotonic() + 600
        while not done():  # parsing every verdict is not free: look twice a second
            assert time.monotonic() < deadline, f"timed out waiting for {units} units on {condition}"
            time.sleep(0.5)
        self.line.halt()
        self.settle()

    def settle(self) -> None:
        """Wait until every committed verdict arrived on MQTT and the review queue uploaded all."""
        time.sleep(0.5)
        wait_until(
            lambda: self.verdict_sub.seqs()[-1:] == [self.daemon.outbox.last_seq],
            60,
            "all verdicts on MQTT",
        )
        queue = self.daemon.review_queue
        assert queue is not None
        wait_until(lambda: queue.depth() == 0, 120, "the review queue uploaded to Label Studio")

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(60)
        self.verdict_sub.stop()
        self.alert_sub.stop()


def _alarms(daemon: EdgeDaemon) -> dict[str, float]:
    """Each drift signal's alarm gauge (0 ok, 1 warning, 2 alarm), as Prometheus exports it."""
    slot = daemon.slot
    assert slot is not None
    gauge = daemon.metrics.drift_alarm
    return {s: float(gauge.labels(signal=s)._value.get()) for s in slot.drift.signals}


def test_line_shift_is_noticed_labeled_retrained_and_recovered(
    tmp_path: Path, broker: Broker, label_studio: LabelStudioInfo
) -> None:
    started = time.monotonic()
    clock: dict[str, float] = {}

    # --- model 1.0.0: trained on condition A ------------------------------------------------
    data_a = tmp_path / "data_a"
    write_synthetic_dataset(
        data_a, images=TRAIN_IMAGES, seed=TRAIN_SEED, imgsz=IMGSZ, defect_rate=DEFECT_RATE, video_frames=0
    )
    eval_b = tmp_path / "eval_b"
    write_synthetic_dataset(
        eval_b,
        images=EVAL_IMAGES,
        seed=EVAL_SEED,
        imgsz=IMGSZ,
        defect_rate=DEFECT_RATE,
        condition="shifted",
        val_share=0.5,
        video_frames=0,
    )
    t0 = time.monotonic()
    first = train(data_a, tmp_path / "run_a", TRAIN_A)
    calibrate_run(first.run, max_escape=MAX_ESCAPE, policy=POLICY)  # under-confident: 0.5 misses
    # fp32 only, as the retrained model below: both models run in the same precision on every CPU,
    # so the drop and the recovery compare like with like. (On an AVX2 CPU seed 0's model kept
    # 92.4 % of condition B through its INT8 variant, certified there, and 88.6 % in fp32.)
    model_a = export_run(first.run, out=tmp_path / "model_a", name=NAME, version="1.0.0", variants=False)
    clock["train_a_s"] = time.monotonic() - t0

    project = f"flywheel-{uuid.uuid4().hex[:8]}"
    client = LabelStudioClient(label_studio.url, label_studio.token)
    ls_project, _ = client.ensure_project(project, list(CLASSES))
    cfg = _station(tmp_path, broker, label_studio, project, eval_b)
    registry = Registry(cfg.registry.root)
    registry.add(model_a, why="trained on condition A")
    registry.follow("line1", "st1", NAME)
    registry.promote(NAME, "1.0.0", Stage.PRODUCTION, why="first model", accept_missed_target=ACCEPTS_MISS)
    first_event = registry.history(NAME)[-1]
    assert ("missed_target" in first_event.detail) == (
        registry.get(NAME, "1.0.0").card.missed_target() is not None
    )
    publish_model(registry, NAME, MqttConfig(host=broker.host, port=broker.port))

    station = _Run(cfg, broker)  # starts without a model: it follows the retained …/model message
    try:
        wait_until(lambda: station.daemon.slot is not None, 60, "the station to load 1.0.0 from MQTT")
        assert station.daemon.slot is not None and station.daemon.slot.ref.version == "1.0.0"

        # --- condition A ------------------------------------------------------------------------
        station.run("nominal", "1.0.0", UNITS_A)
        before = Tally.of(station.phase("nominal", "1.0.0"), station.line.truth)
        alarms_a = _alarms(station.daemon)

        # --- the line shifts to condition B -------------------------------------------------------
        sampler = station.daemon.slot.sampler
        assert sampler is not None
        station.run(
            "shifted",
            "1.0.0",
            UNITS_B,
            until=lambda: sampler.stats.sampled >= MIN_LABELED,
            most=MAX_UNITS_B,
        )
        shifted = Tally.of(station.phase("shifted", "1.0.0"), station.line.truth)
        alarms_b = _alarms(station.daemon)
        drift_alerts = [a for a in station.alert_sub.payloads() if a.get("kind") == "drift"]

        # --- QA labels what the station sent ------------------------------------------------------
        tasks = tasks_of(label_studio.url, label_studio.token, ls_project.id)
        with_boxes = [t for t in tasks if t["predictions"] and t["predictions"][0]["result"]]
        reasons: dict[str, int] = {}
        for t in tasks:
            reasons[t["data"]["reason"]] = reasons.get(t["data"]["reason"], 0) + 1
        boxes_drawn = label_from_truth(label_studio.url, label_studio.token, tasks, station.line.truth, IMGSZ)

        # --- lineguard retrain --auto-promote (the line stands still meanwhile) -----------------
        t0 = time.monotonic()
        report = retrain(
            cfg,
            name=NAME,
            project=project,
            parent_data=data_a,
            out=tmp_path / "round2",
            client=client,
            epochs=RETRAIN_EPOCHS,
            auto_promote=True,
            accept_missed_target=ACCEPTS_MISS,
            train_cfg=FINE_TUNE,
            # The loop is under test, not the variants: fp32 only keeps the export short. (On 60
            # frozen units one unit moves mAP50 by more than the 1-point certification margin; a
            # retrained model's INT8 variant at -3.1 points would only be decertified by the gate
            # now, fp32 still promoted.)
            variants=False,
            say=lambda line: print(line, flush=True),
        )
        clock["retrain_s"] = time.monotonic() - t0
        gate = json.loads((tmp_path / "round2" / "gate" / "gate_report.json").read_text())

        # --- the station hot-swaps; the line runs on condition B again ----------------------------
        recovered = back_on_a = None  # a run whose gate refused the candidate is published too
        if report.gate_passed:
            wait_until(
                lambda: station.daemon.slot is not None and station.daemon.slot.ref.version == "1.0.1",
                120,
                "the station to swap in 1.0.1",
            )
            station.run("shifted", "1.0.1", UNITS_AFTER)
            recovered = Tally.of(station.phase("shifted", "1.0.1"), station.line.truth)
            station.run("nominal", "1.0.1", UNITS_A)
            back_on_a = Tally.of(station.phase("nominal", "1.0.1"), station.line.truth)
    finally:
        station.stop()
        client.delete_project(ls_project.id)
        client.close()
    clock["total_s"] = time.monotonic() - started

    versions = [v.model.version if v.model else "-" for v in station.verdicts()]
    runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    pulled = json.loads((report.dataset / "manifest.json").read_text())
    figures: dict[str, Any] = {
        "condition_a_before": before.figures(),
        "condition_b_before_retrain": shifted.figures(),
        "condition_b_after_retrain": recovered.figures() if recovered else None,
        "condition_a_after_retrain": back_on_a.figures() if back_on_a else None,
        "drift_alarms_after_shift": sorted(s for s, v in alarms_b.items() if v >= 2),
        "drift_alarms_before_shift": sorted(s for s, v in alarms_a.items() if v >= 2),
        "drift_alerts": len(drift_alerts),
        "label_studio_tasks": len(tasks),
        "tasks_with_predicted_boxes": len(with_boxes),
        "tasks_by_reason": reasons,
        "boxes_drawn_by_qa": boxes_drawn,
        "round2_dataset": {"images": pulled["counts"], "added_from_label_studio": report.new_tasks},
        "gate": {"passed": report.gate_passed, "summary": report.gate_summary, "results": gate["results"]},
        "model_runs_at_the_station": runs,
        "thresholds": {mv.version: mv.card.thresholds for mv in registry.versions(NAME)},
        "timing_s": {k: round(v, 1) for k, v in clock.items()},
    }
    print(json.dumps(figures, indent=2))
    write_figures(RESULTS, SEED, figures, _markdown(figures))

    assert report.gate_passed, f"the gate refused the retrained model: {report.gate_summary}"
    assert recovered is not None and back_on_a is not None

    # The first model meets the 5 % targets on nominal units, and retraining brings the shifted
    # line back to them (issue #17 item 4).
    assert _meets_targets(before), before.line()
    assert shifted.accuracy <= before.accuracy - 0.1, f"no drop: {before.line()} -> {shifted.line()}"
    # The image signals see the new lamp; they were quiet on condition A.
    new_alarms = set(figures["drift_alarms_after_shift"]) - set(figures["drift_alarms_before_shift"])
    assert new_alarms & {"brightness", "contrast", "sharpness"}, (alarms_a, alarms_b)
    assert {a["signal"] for a in drift_alerts if a["level"] == "alarm"} >= new_alarms
    assert len(tasks) >= MIN_LABELED and with_boxes
    assert all(t["predictions"][0]["model_version"] == f"{NAME}:1.0.0" for t in tasks)
    assert report.promoted and report.gate_passed, report.gate_summary
    assert runs == ["1.0.0", "1.0.1"], runs
    production = registry.production(NAME)
    assert production is not None and production.version == "1.0.1"
    actions = [e.action for e in registry.history(NAME)]
    for step in ("retrain_data", "retrain_train", "gate", "promote", "rollout"):
        assert step in actions, actions
    # Retraining wins back at least half of what the shift cost: a fixed 10 points would fail a
    # seed whose shift was mild (seed 2 lost 10.9 points and won back 9.7) though the loop worked.
    lost = before.accuracy - shifted.accuracy
    assert recovered.accuracy >= shifted.accuracy + lost / 2, f"{shifted.line()} -> {recovered.line()}"
    assert recovered.accuracy >= before.accuracy - 0.08, f"{before.line()} vs {recovered.line()}"
    assert _meets_targets(recovered), recovered.line()


def _meets_targets(tally: Tally) -> bool:
    """Escape and overkill of a phase within the targets (a phase without units of a kind: 0)."""
    f = tally.figures()
    return bool((f["escape_rate"] or 0.0) <= MAX_ESCAPE and (f["overkill_rate"] or 0.0) <= MAX_OVERKILL)


def _markdown(f: dict[str, Any]) -> str:
    def row(label: str, t: dict[str, Any] | None) -> str:
        def pct(v: float | None) -> str:
            return "—" if v is None else f"{100 * v:.1f} %"

        if t is None:
            return f"| {label} | — | — | not run: the gate refused the retrained model | | | |"

        return (
            f"| {label} | {'/'.join(t['model'])} | {t['units']} | {pct(t['accuracy'])} | "
            f"{pct(t['escape_rate'])} | {pct(t['overkill_rate'])} | {pct(t['no_decision_rate'])} |"
        )

    return "\n".join(
        [
            "# Flywheel: line shift -> drift alarm -> QA labels -> retrain -> hot swap -> recovery",
            "",
            "Written by `tests/test_flywheel.py` (real Mosquitto, real Label Studio, YOLOv8n at 160 px, "
            "CPU). Unit accuracy = correct PASS/FAIL over all units; NO_DECISION counts as not correct.",
            "",
            "| phase | model | units | accuracy | escape | overkill | NO_DECISION |",
            "|---|---|---:|---:|---:|---:|---:|",
            *(row(label, f[phase]) for phase, label in PHASES.items()),
            "",
            f"- drift alarms after the shift: {', '.join(f['drift_alarms_after_shift']) or 'none'} "
            f"(before: {', '.join(f['drift_alarms_before_shift']) or 'none'}); "
            f"{f['drift_alerts']} drift alerts",
            f"- Label Studio tasks from the station: {f['label_studio_tasks']} "
            f"({f['tasks_with_predicted_boxes']} with predicted boxes; by reason {f['tasks_by_reason']}), "
            f"labeled from ground truth ({f['boxes_drawn_by_qa']} boxes)",
            f"- round-2 training set: {f['round2_dataset']}",
            f"- gate on the frozen condition-B set: {f['gate']['summary']}",
            f"- models at the station, in order: {' -> '.join(f['model_runs_at_the_station'])}; "
            f"calibrated thresholds {f['thresholds']}",
            f"- timing: {f['timing_s']}",
            "",
        ]
    )
