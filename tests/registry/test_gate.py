"""The promotion gate: a worse candidate is refused, a better one accepted, on one frozen set."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lineguard.cli import main
from lineguard.config import GateConfig
from lineguard.errors import ModelError
from lineguard.inference import Detections
from lineguard.messages import CalibrationTargets, ModelCard, TargetsAchieved
from lineguard.registry import (
    EvalResult,
    EvalSet,
    Registry,
    Stage,
    average_precision_50,
    compare,
    golden_problems,
    run_gate,
)

# Latency is checked, but with a wide margin here: the test machine is shared and noisy.
MARGINS = GateConfig(max_latency_increase=2.0, latency_slack_ms=20.0)


def test_gate_refuses_a_candidate_that_misses_defects(
    registry: Registry, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    registry.add(models["good"])
    registry.add(models["weak"])
    registry.promote("signal", "2.0.0", Stage.PRODUCTION)
    report = run_gate(
        registry, "signal", "1.0.0", EvalSet.load(eval_dir), MARGINS, report_dir=tmp_path / "rep"
    )

    assert not report.passed
    assert [c.metric for c in report.failed] == ["escape_rate"]
    cand, prod = report.results["candidate"], report.results["production"]
    assert cand["escape_rate"] > 0.5 and prod["escape_rate"] == 0.0
    assert cand["eval_digest"] == prod["eval_digest"]
    body = json.loads((tmp_path / "rep" / "gate_report.json").read_text())
    assert body["schema"] == "lineguard.gate_report/1" and body["passed"] is False
    markdown = (tmp_path / "rep" / "gate_report.md").read_text()
    assert "REFUSED" in markdown and "| escape_rate |" in markdown and "**worse**" in markdown
    with pytest.raises(
        ModelError, match=r"promotion gate refused signal:1.0.0 against signal:2.0.0: escape_rate"
    ):
        registry.promote("signal", "1.0.0", Stage.PRODUCTION, gate=report.audit())
    assert registry.production("signal") is not None
    assert registry.get("signal").version == "2.0.0"
    assert registry.history("signal")[-1].action == "gate"


def test_gate_accepts_a_better_candidate(
    registry: Registry, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    registry.add(models["weak"])
    registry.add(models["good"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    report = run_gate(registry, "signal", "2.0.0", EvalSet.load(eval_dir), MARGINS)

    assert report.passed, report.summary
    assert report.results["candidate"]["escape_rate"] < report.results["production"]["escape_rate"]
    mv = registry.promote("signal", "2.0.0", Stage.PRODUCTION, gate=report.audit())
    assert mv.stage is Stage.PRODUCTION
    promote = registry.history("signal")[-1]
    assert promote.detail["gate"]["passed"] is True


def test_cli_promote_runs_the_gate_and_writes_the_report(
    models: dict[str, Path], eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lineguard.yaml"
    config.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\n  eval_set: {eval_dir}\n"
        "  gate:\n    max_latency_increase: 2.0\n    latency_slack_ms: 20\n"
    )
    base = ["registry", "--config", str(config)]
    for key in ("good", "weak"):
        assert main([*base, "add", str(models[key])]) == 0
    assert main([*base, "promote", "signal:2.0.0", "--to", "production"]) == 0
    capsys.readouterr()
    assert main([*base, "promote", "signal:1.0.0", "--to", "production"]) == 2
    captured = capsys.readouterr()
    assert "REFUSED" in captured.out
    assert "error: promotion gate refused signal:1.0.0 against signal:2.0.0" in captured.err
    assert (tmp_path / "reg" / "reports" / "signal-1.0.0" / "gate_report.md").is_file()
    assert main([*base, "promote", "signal:1.0.0", "--to", "production", "--force", "--reason", "test"]) == 0
    assert Registry(tmp_path / "reg").get("signal").version == "1.0.0"


def _result(**over: float) -> EvalResult:
    base = EvalResult("m:1", "0" * 64, "d", 10, 5, 0.5, 0.9, 0.1, 0.1, 0.0, 10.0, 0)
    return replace(base, **over)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "failed"),
    [
        ({}, []),
        ({"map50": 0.47}, ["map50"]),
        ({"map50": 0.49}, []),
        ({"escape_rate": 0.2}, ["escape_rate"]),
        ({"overkill_rate": 0.2}, ["overkill_rate"]),
        ({"no_decision_rate": 0.1}, ["no_decision_rate"]),
        ({"latency_median_ms": 20.0}, ["latency_median_ms"]),
        ({"latency_median_ms": 14.0}, []),
        ({"errors": 1}, ["errors"]),
    ],
)
def test_compare_applies_each_margin(candidate: dict[str, float], failed: list[str]) -> None:
    checks = compare(_result(**candidate), _result(), GateConfig())
    assert [c.metric for c in checks if not c.passed] == failed


def test_compare_uses_unit_accuracy_when_the_set_has_no_boxes() -> None:
    checks = compare(_result(map50=None, unit_accuracy=0.5), _result(map50=None), GateConfig())  # type: ignore[arg-type]
    assert [c.metric for c in checks if not c.passed] == ["unit_accuracy"]


def _dets(*rows: tuple[int, float, float, float, float, float]) -> Detections:
    arr = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections.from_arrays(arr[:, 2:], arr[:, 1], arr[:, 0])


@pytest.mark.parametrize(
    ("preds", "truths", "expected"),
    [
        ([Detections.empty()], [()], None),
        ([Detections.empty()], [((0, 0.1, 0.1, 0.3, 0.3),)], 0.0),
        ([_dets((0, 0.9, 0.1, 0.1, 0.3, 0.3))], [((0, 0.1, 0.1, 0.3, 0.3),)], 1.0),
        ([_dets((1, 0.9, 0.1, 0.1, 0.3, 0.3))], [((0, 0.1, 0.1, 0.3, 0.3),)], 0.0),
        (
            [_dets((0, 0.9, 0.6, 0.6, 0.9, 0.9), (0, 0.8, 0.1, 0.1, 0.3, 0.3))],
            [((0, 0.1, 0.1, 0.3, 0.3),)],
            0.5,
        ),
    ],
)
def test_average_precision_50(
    preds: list[Detections],
    truths: list[tuple[tuple[int, float, float, float, float], ...]],
    expected: float | None,
) -> None:
    ap = average_precision_50(preds, truths)
    if expected is None:
        assert ap is None
    else:
        assert ap == pytest.approx(expected)


def test_eval_set_digest_changes_when_a_label_changes(eval_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(eval_dir, copy)
    assert EvalSet.load(copy).digest == EvalSet.load(eval_dir).digest
    label = sorted((copy / "labels").iterdir())[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert EvalSet.load(copy).digest != EvalSet.load(eval_dir).digest


def test_gate_refuses_a_candidate_that_fails_on_golden_images(
    registry: Registry, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    registry.add(models["weak"])
    registry.add(models["good"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "broken.png").write_bytes(b"not an image")
    report = run_gate(
        registry,
        "signal",
        "2.0.0",
        EvalSet.load(eval_dir),
        MARGINS,
        golden_dir=golden,
        golden_runner=golden_problems,
    )
    assert [c.metric for c in report.failed] == ["golden_images"]
    assert "broken.png: unreadable image" in report.summary


def _missing_its_target(models: dict[str, Path], tmp_path: Path) -> Path:
    """The ``good`` model with a card saying calibration aimed at 5% escape and achieved 12%."""
    folder = tmp_path / "missed"
    shutil.copytree(models["good"], folder)
    card = ModelCard.load(folder / "model_card.json")
    card.targets = CalibrationTargets(max_escape=0.05)
    card.achieved = TargetsAchieved(escape_rate=0.12, overkill_rate=0.03, split="val")
    card.save(folder / "model_card.json")
    return folder


def test_a_model_missing_its_own_target_is_refused_unless_accepted_and_audited(
    registry: Registry, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    registry.add(models["weak"])
    registry.add(_missing_its_target(models, tmp_path))
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    refused = run_gate(registry, "signal", "2.0.0", EvalSet.load(eval_dir), MARGINS)
    accepted = run_gate(
        registry, "signal", "2.0.0", EvalSet.load(eval_dir), MARGINS, accept_missed_target="trial run"
    )

    assert [c.metric for c in refused.failed] == ["escape_target"]
    assert refused.summary == (
        "escape_target: signal:2.0.0 misses its calibration target on val: escape 12.0% > target 5.0%"
    )
    assert accepted.passed and accepted.checks[-1].note.endswith("; accepted: trial run")
    with pytest.raises(ModelError, match=r"escape 12.0% > target 5.0%; promote it only with --accept"):
        registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="force is not enough")
    registry.promote(
        "signal", "2.0.0", Stage.PRODUCTION, gate=accepted.audit(), accept_missed_target="trial run"
    )
    event = registry.history("signal")[-1]
    assert event.detail["missed_target"]["accepted"] == "trial run"


def test_cli_first_promotion_of_a_model_missing_its_target_needs_the_override(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["registry", "--root", str(tmp_path / "reg")]
    assert main([*root, "add", str(_missing_its_target(models, tmp_path))]) == 0
    assert main([*root, "promote", "signal:2.0.0", "--to", "production"]) == 2
    err = capsys.readouterr().err
    assert "error: signal:2.0.0 misses its calibration target on val: escape 12.0% > target 5.0%" in err
    assert len(err.strip().splitlines()) == 1
    accept = ["--accept-missed-target", "pilot line, QA double-checks"]
    assert main([*root, "promote", "signal:2.0.0", "--to", "production", *accept]) == 0
    assert "(missed target accepted: pilot line, QA double-checks)" in capsys.readouterr().out
    assert main([*root, "history", "signal"]) == 0
    assert "[missed target accepted: pilot line, QA double-checks]" in capsys.readouterr().out
