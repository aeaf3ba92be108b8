"""``lineguard edge run`` and ``edge check``: what an operator starts, stops and reads."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml
from pydantic import BaseModel
from support.signal_model import build_signal_onnx

from lineguard.cli import main
from lineguard.config import LineguardConfig, load_config
from lineguard.edge.outbox import Outbox
from lineguard.inference import VERDICT_COLORS
from lineguard.messages import ModelCard, Verdict
from lineguard.synthetic import render_unit

EXAMPLE = Path(__file__).parents[2] / "configs" / "station.example.yaml"


def write_config(tmp_path: Path, model: Path | None, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "station": {"station": "s1", "data_dir": str(tmp_path / "var")},
        "camera": {"kind": "synthetic", "fps": 20, "synthetic_imgsz": 160},
        "model": {"path": None if model is None else str(model), "threads": 1, "warmup_runs": 1},
        "mqtt": {"enabled": False},
        "http": {"port": 0},
        "jsonl_path": str(tmp_path / "verdicts.jsonl"),
        **sections,
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        keys.add(key)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, key + ".")
    return keys


def _yaml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and value:
            keys |= _yaml_keys(value, prefix + key + ".")
    return keys


def test_example_config_loads_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg == LineguardConfig()  # every value shown is the default
    documented = _yaml_keys(yaml.safe_load(EXAMPLE.read_text()))
    documented = {k for k in documented if not k.startswith("policy.class_thresholds.")}
    missing = _keys(LineguardConfig) - documented
    assert not missing, f"add these keys to {EXAMPLE.name} with a comment: {sorted(missing)}"


def test_check_on_the_example_warns_about_the_missing_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["edge", "check", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK    config")
    assert out[1].startswith("WARN  model") and "no_model" in out[1]
    assert out[2].startswith("OK    pipeline") and "NO_DECISION/no_model" in out[2]
    assert out[-1] == "OK"


def test_check_runs_a_synthetic_frame_through_the_model(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_model / "model.onnx")
    assert main(["edge", "check", "--config", str(config), "--camera"]) == 0
    out = capsys.readouterr().out
    assert "OK    model      tiny:0.0.1 sha256" in out
    assert "OK    precision  auto: fp32" in out  # its card certifies no variant
    assert "OK    pipeline   synthetic 160 px frame -> " in out
    assert "OK    camera     synthetic:seed=0: 160x160 frame" in out
    assert out.splitlines()[-1] == "OK"


def test_check_names_a_tampered_model_and_exits_1(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    config = write_config(tmp_path, folder / "model.onnx")
    assert main(["edge", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  model      model.onnx has sha256" in out
    assert out.splitlines()[-1] == "FAILED"


def test_check_reports_a_misspelled_key_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("camera:\n  knd: video\n")
    assert main(["edge", "check", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"error: config error in {config}: camera.knd: unknown key (misspelled?)"
    ]


def test_sigterm_finishes_cleanly_with_no_unit_lost(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model / "model.onnx")
    verdict_file = tmp_path / "verdicts.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineguard.cli", "edge", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if verdict_file.exists() and len(verdict_file.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr

    outbox = Outbox(tmp_path / "var" / "outbox.sqlite")
    last_seq, undelivered = outbox.last_seq, outbox.depth()
    outbox.close()
    seqs = [Verdict.from_json(line).seq for line in verdict_file.read_text().splitlines()]
    assert last_seq >= 5
    assert seqs == list(range(1, last_seq + 1))  # every unit taken has its verdict in the file
    assert undelivered == 0
    assert stdout.startswith(f"stopped: {last_seq} units (PASS ")

    events = [json.loads(line) for line in stderr.splitlines()]  # one JSON object per log line
    names = [e.get("event") for e in events]
    assert {"model_in_use", "http_listening", "started", "signal", "stopped"} <= set(names)
    assert names.index("signal") < names.index("stopped")


def test_run_with_max_units_prints_the_summary(tmp_path: Path, synthetic_dataset: Path) -> None:
    video = synthetic_dataset / "video" / "line.avi"
    config = write_config(
        tmp_path, None, camera={"kind": "video", "uri": str(video), "fps": 200}, http={"enabled": False}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lineguard.cli", "edge", "run", "--config", str(config), "--max-units", "7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "stopped: 7 units (PASS 0, FAIL 0, NO_DECISION 7); 0 frames skipped; last seq 7, 0 undelivered"
    )


def test_run_with_samples_draws_decided_units_fail_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_signal_onnx(tmp_path / "model")  # finds the synthetic line's dark defects
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"unit-{i:02d}.png"), render_unit(4, i, imgsz=160).image)
    (folder / "unit-10.png").write_bytes(b"cut short")
    config = write_config(
        tmp_path,
        tmp_path / "model" / "model.onnx",
        camera={"kind": "folder", "uri": str(folder), "fps": 100},
        http={"enabled": False},
    )
    out = tmp_path / "pictures" / "run.png"
    code = main(["edge", "run", "--config", str(config), "--samples", "5", "--samples-out", str(out)])

    assert code == 0
    summary, samples = capsys.readouterr().out.strip().splitlines()
    assert "; 1 frame skipped (unreadable 1); last seq 10, 0 undelivered" in summary
    assert samples == f"samples: 5 units in {out}"
    got = [Verdict.from_json(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    kinds = {k: [v for v in got if v.verdict.value == k] for k in ("FAIL", "NO_DECISION", "PASS")}
    assert kinds["FAIL"] and kinds["PASS"]  # the signal model finds some defects, not all units
    queues = [list(vs) for vs in kinds.values()]
    expected = [q.pop(0).verdict for _ in range(5) for q in queues if q][:5]  # FAIL, ND, PASS in turn
    grid = cv2.imread(str(out))
    assert grid is not None
    assert grid.shape == (2 * 274, 4 * 240, 3)  # 5 tiles of 240 x (240 + caption), 4 to a row
    colors = [tuple(int(c) for c in grid[(i // 4) * 274 + 1, (i % 4) * 240 + 120]) for i in range(5)]
    assert colors == [VERDICT_COLORS[kind] for kind in expected]  # each tile framed in its verdict
    assert not grid[274:, 240:].any()  # the rest of the last row is blank


def test_samples_out_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    config = write_config(tmp_path, None, http={"enabled": False})
    out = tmp_path / "file" / "run.png"  # a folder that is a file
    code = main(
        [
            "edge",
            "run",
            "--config",
            str(config),
            "--max-units",
            "2",
            "--samples",
            "2",
            "--samples-out",
            str(out),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write the samples PNG {out}: {out.parent} is a file, not a folder; "
        "pass another --samples-out"
    )  # before the run: no unit was inspected
    assert not (tmp_path / "verdicts.jsonl").exists()


def test_tampered_card_is_refused_at_run_and_units_get_no_model(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    card = ModelCard.load(folder / "model_card.json")
    card.classes = ["scratch"]
    card.thresholds = {"scratch": 0.5}
    card.save(folder / "model_card.json")
    config = write_config(tmp_path, folder / "model.onnx", http={"enabled": False})
    proc = subprocess.run(
        [sys.executable, "-m", "lineguard.cli", "edge", "run", "--config", str(config), "--max-units", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    failed = [json.loads(line) for line in proc.stderr.splitlines() if '"model_load_failed"' in line]
    assert failed and "channels" in failed[0]["error"]
    reasons = {
        Verdict.from_json(line).reason.value
        for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()
    }
    assert reasons == {"no_model"}


def test_run_on_a_damaged_outbox_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, None)
    outbox = tmp_path / "var" / "outbox.sqlite"
    outbox.parent.mkdir(parents=True)
    outbox.write_bytes(b"garbage where the verdicts were " * 200)
    assert main(["edge", "run", "--config", str(config), "--max-units", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: verdict outbox {outbox} is damaged") and "aside" in err[0]
