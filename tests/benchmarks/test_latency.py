"""The latency benchmark times every stage, scores mAP50 per variant and times verdicts through MQTT.

Runs on the tiny random-weight model with a handful of frames; no time is asserted, only that
each figure the report promises is measured on the expected number of units and written out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.mosquitto import Broker, free_port

from lineguard.benchmarks.cli import bench
from lineguard.benchmarks.latency import (
    EDGE_STAGES,
    Variant,
    default_omp_wait_policy,
    run_latency_benchmark,
)
from lineguard.benchmarks.latency_report import markdown, write_report
from lineguard.errors import InputError
from lineguard.training.evaluate import evaluate

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def test_benchmark_reports_every_stage_and_the_ratio_to_ultralytics(tiny_model: Path, tmp_path: Path) -> None:
    report = run_latency_benchmark(tiny_model / "model.onnx", frames=4, warmup=1, frame_size=(320, 240))
    (edge,) = report.variants
    assert set(EDGE_STAGES) <= set(edge.stages)
    assert all(edge.stages[stage].n == 4 for stage in EDGE_STAGES)
    assert report.ultralytics["predict"].n == 4
    # The ratio the report prints is the two medians of this run, not a figure from elsewhere.
    assert edge.ratios["predict_over_frame_to_verdict"] == pytest.approx(
        report.ultralytics["predict"].p50_ms / edge.stages["frame_to_verdict"].p50_ms
    )
    assert not any(name.startswith("e2e_") for name in edge.stages)  # no broker asked for
    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["imgsz"] == 160
    assert len(data["settings"]["load_avg_start"]) == 3
    text = paths["markdown"].read_text()
    assert "| onnxruntime | fp32 |" in text and "| ultralytics predict |" in text
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    cores = data["settings"]["cpu_count"]
    report.settings["load_avg_start"] = [0.5 * cores, 0.5 * cores, 0.5 * cores]
    assert "taken under load" in markdown(report)  # so nobody quotes its milliseconds as absolute
    report.settings["load_avg_start"] = [0.0, 0.0, 0.0]
    assert "idle at the start" in markdown(report) and "under load" not in markdown(report)
    report.settings["omp_wait_policy"] = "PASSIVE"  # torch's threads idle: says which baseline this is
    assert "this run had OMP_WAIT_POLICY=PASSIVE" in markdown(report)


@pytest.mark.parametrize(
    ("given", "torch_loaded", "stated"),
    [
        (None, False, "PASSIVE"),
        (None, True, "PASSIVE (set after torch loaded: may not apply)"),
        ("ACTIVE", True, "ACTIVE"),  # from the process's environment: libgomp read it
    ],
)
def test_the_omp_note_says_set_after_torch_only_when_it_was(
    monkeypatch: pytest.MonkeyPatch, given: str | None, torch_loaded: bool, stated: str
) -> None:
    if torch_loaded:
        monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", types.ModuleType("torch")))
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", given or "")  # monkeypatch restores it after the test
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY")
    assert default_omp_wait_policy("PASSIVE") == stated
    assert os.environ["OMP_WAIT_POLICY"] == (given or "PASSIVE")


@pytest.mark.parametrize(
    ("share", "planned", "kept_text"), [(1.0, 21, "every frame kept"), (0.25, 5, "25 % of")]
)
def test_frame_store_is_timed_on_and_off_in_the_same_run(
    tiny_model: Path, share: float, planned: int, kept_text: str
) -> None:
    report = run_latency_benchmark(
        tiny_model / "model.onnx",
        frames=20,
        warmup=1,
        frame_size=(320, 240),
        compare_ultralytics=False,
        frame_store=share,
    )
    off, on = report.variants
    assert (off.label, on.label) == ("onnxruntime fp32", "onnxruntime fp32 + frame store")
    assert off.stages["frame_to_verdict"].n == on.stages["frame_to_verdict"].n == 20
    assert "frame_store" not in off.stages and on.stages["frame_store"].n == 20
    kept, dropped = on.frame_store["kept"], on.frame_store["dropped_busy"]
    # 20 timed + 1 warm-up frame, of which `share` were meant to be kept: kept, or counted as not
    assert kept > 0 and kept + dropped == planned
    text = markdown(report)
    assert kept_text in text
    assert "| onnxruntime | fp32 + frame store |" in text
    ratio = on.stages["frame_to_verdict"].p50_ms / off.stages["frame_to_verdict"].p50_ms
    assert f"(**{ratio:.3f}x**)" in text


def test_frame_store_soak_reports_its_peak_against_the_limit(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["frame-store", "--minutes", "0.02", "--fps", "50", "--size", "160", "--max-bytes", "65536"]
    result = CliRunner().invoke(bench, [*args, "--json-out", str(out), "--allow-dirty"])
    assert result.exit_code == 0, result.output
    assert "every frame kept" in result.output and "limit held" in result.output
    written = json.loads(out.read_text())
    assert written["peak_folder_bytes"] <= written["max_bytes"] == 65536
    assert written["provenance"]["command"] and written["provenance"]["machine"]["cores"] >= 1


def test_map50_per_variant_matches_lineguard_evaluate(
    tiny_model: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    model = tiny_model / "model.onnx"
    variants = [Variant("onnxruntime", "fp32", model)]
    if HAS_OPENVINO:
        variants += [Variant("openvino", "fp32", model), Variant("openvino", "bf16", model)]
    report = run_latency_benchmark(
        model, variants=variants, frames=2, warmup=0, frame_size=(160, 160), data=synthetic_dataset
    )
    assert [r.label for r in report.variants] == [v.label for v in variants]
    reference = evaluate(model, synthetic_dataset)
    assert report.variants[0].map50 == pytest.approx(reference.map50, abs=1e-9)
    assert all(r.map50 is not None and 0.0 <= r.map50 <= 1.0 for r in report.variants)
    assert report.ultralytics_map50 is not None
    text = write_report(report, tmp_path)["markdown"].read_text()
    first = report.variants[0].map50
    assert first is not None and f"| {100 * first:.1f} |" in text
    assert "mAP50 onnxruntime fp32" in text


def test_benchmark_refuses_a_dataset_of_other_classes(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "other"
    (data / "images" / "val").mkdir(parents=True)
    (data / "labels" / "val").mkdir(parents=True)
    (data / "data.yaml").write_text("names: [dent, rust]\nnc: 2\n")
    import cv2
    import numpy as np

    cv2.imwrite(str(data / "images" / "val" / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(InputError, match="trained for classes"):
        run_latency_benchmark(
            tiny_model / "model.onnx", frames=1, warmup=0, compare_ultralytics=False, data=data
        )


def test_every_verdict_is_timed_until_the_subscriber_receives_it(tiny_model: Path, broker: Broker) -> None:
    report = run_latency_benchmark(
        tiny_model / "model.onnx",
        frames=6,
        warmup=2,
        frame_size=(320, 240),
        mqtt=(broker.host, broker.port),
    )
    (edge,) = report.variants
    assert edge.lost == {"fsync": 0, "no_fsync": 0}
    for label in ("fsync", "no_fsync"):  # used in turn: half the units each
        for stage in ("commit", "deliver", "e2e", "overhead_e2e"):
            assert edge.stages[f"{stage}_{label}"].n == 3
        assert edge.stages[f"e2e_{label}"].min_ms > edge.stages[f"deliver_{label}"].min_ms
    assert report.mqtt["outbox_modes"] == ["fsync", "no_fsync"]
    # ultralytics from the same JPEG bytes, against the fsync'd end-to-end median of this run
    assert edge.ratios["decode_predict_over_e2e_fsync"] == pytest.approx(
        report.ultralytics["decode_predict"].p50_ms / edge.stages["e2e_fsync"].p50_ms
    )


def test_bench_latency_command_writes_mqtt_and_map50_rows(
    tiny_model: Path, synthetic_dataset: Path, broker: Broker, tmp_path: Path
) -> None:
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--frames", "2", "--warmup", "0"]
    args += ["--frame-size", "200x100", "--no-ultralytics", "--data", str(synthetic_dataset), "--allow-dirty"]
    args += ["--floor-size", "128"]
    args += ["--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--outbox", "fsync"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out"), "--name", "run1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run1.json", "run1.md", "run1.png"]
    data = json.loads((tmp_path / "out" / "run1.json").read_text())
    default, variant = data["variants"]  # the station as configured, then the one asked for
    assert default["label"].startswith("default (auto → ") and variant["label"] == "onnxruntime fp32"
    assert variant["map50"] is not None
    # --data times the dataset's own frames (160 px units), not synthetic 200x100 ones.
    assert data["settings"]["frames_of"].endswith(f"of {synthetic_dataset.name} (val split, 160x160)")
    assert variant["stages"]["e2e_fsync"]["n"] == 2
    assert "e2e_no_fsync" not in variant["stages"]
    assert "e2e via MQTT p50 / p99 (fsync)" in result.output
    # The figures name their code, machine and command (a dirty tree is marked as such).
    origin = data["provenance"]
    assert origin["git_revision"] and origin["machine"]["cores"] == os.cpu_count()
    assert origin["command"] == shlex.join(sys.argv) and origin["versions"]["onnxruntime"]
    assert f"from revision `{origin['git_revision']}`" in result.output


def test_bench_latency_says_when_no_broker_answers(tiny_model: Path, tmp_path: Path) -> None:
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--frames", "1", "--warmup", "0"]
    args += ["--frame-size", "64x64", "--no-ultralytics", "--mqtt-port", str(free_port()), "--allow-dirty"]
    args += ["--floor-size", "128"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "skipped: no MQTT broker answered at 127.0.0.1:" in result.output
    assert "skipped: no MQTT broker answered" in (tmp_path / "out" / "latency.md").read_text()


def test_bf16_without_openvino_backend_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--precision", "bf16", "--no-mqtt"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, InputError)
    assert "needs --backend openvino" in str(result.exception)


@pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino extra is not installed")
def test_openvino_is_also_timed_against_ultralytics_own_openvino_export(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights beside the ONNX (or in the card's training run) are exported by ultralytics itself."""
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--backend", "openvino"]
    args += ["--frames", "2", "--warmup", "0", "--frame-size", "320x240", "--no-mqtt", "--allow-dirty"]
    args += ["--floor-size", "128"]
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    try:
        result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out")])
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)  # the command sets it for its own process
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "latency.json").read_text())
    # By default ultralytics is timed without torch's spinning threads slowing it down.
    assert data["settings"]["omp_wait_policy"].startswith("PASSIVE")
    assert data["ultralytics_openvino"]["predict"]["n"] == 2
    (variant,) = [v for v in data["variants"] if v["label"] == "openvino fp32"]
    assert variant["ratios"]["openvino_predict_over_frame_to_verdict"] == pytest.approx(
        data["ultralytics_openvino"]["predict"]["p50_ms"] / variant["stages"]["frame_to_verdict"]["p50_ms"]
    )
    assert "| ultralytics predict, its OpenVINO export | fp32 |" in result.output
    assert "ultralytics predict on its own OpenVINO export ÷ edge frame→verdict" in result.output


def _with_variants(tiny_model: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model whose card lists a certified bf16 and an uncertified int8 variant."""
    import shutil

    from lineguard.messages import ModelCard, ModelVariant

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    card = ModelCard.load(folder / "model_card.json")
    listed = [
        ModelVariant(
            name=precision,
            precision=precision,
            runtime="openvino",
            sha256=card.sha256,
            map50=0.5,
            certified=precision == "bf16",
            reason="set by the test",
        )
        for precision in ("bf16", "int8")
    ]
    card.model_copy(update={"variants": listed}).save(folder / "model_card.json")
    return folder / "model.onnx"


@pytest.mark.skipif(not HAS_OPENVINO, reason="the card's variants run on OpenVINO")
def test_station_default_and_every_card_variant_are_timed_without_flags(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = _with_variants(tiny_model, tmp_path)
    args = ["latency", "--model", str(model), "--frames", "2", "--warmup", "0", "--frame-size", "160x160"]
    args += ["--no-ultralytics", "--no-mqtt", "--floor-size", "128", "--allow-dirty"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "latency.json").read_text())
    default, asked, bf16, int8 = data["variants"]
    # The station as the README configures it says which precision `auto` chose, and why.
    assert default["precision_choice"].startswith(f"auto: {default['precision']}")
    assert default["precision"] in ("fp32", "bf16")  # the uncertified int8 is never chosen
    assert default["label"] == f"default (auto → {default['backend']} {default['precision']})"
    assert "int8: not certified (set by the test)" in default["precision_choice"]
    assert asked["label"] == "onnxruntime fp32" and asked["certified"] is None
    assert (bf16["label"], bf16["certified"]) == ("openvino bf16 (certified)", True)
    assert (int8["label"], int8["certified"]) == ("openvino int8 (NOT certified)", False)
    assert all(v["stages"]["frame_to_verdict"]["n"] == 2 for v in data["variants"])
    text = (tmp_path / "out" / "latency.md").read_text()
    assert f"| {default['label']} | " in text and "| openvino int8 (NOT certified) | int8 | **no** |" in text
    assert f"| default: {default['backend']} | {default['precision']} |" in text  # not mistaken for asked
    assert f'`precision: auto` said "{default["precision_choice"]}"' in text


def test_floors_are_measured_only_where_the_cpu_has_the_instructions() -> None:
    from lineguard.benchmarks.floors import measure_floors
    from lineguard.provenance import cpu_flags

    floors = measure_floors(threads=1, size=128, runs=1)
    assert all(f.gflops > 0 and f.size == 128 and f.threads == 1 for f in floors)
    measured = {f.precision for f in floors}
    flags = cpu_flags()
    assert "fp32" in measured
    assert ("bf16" in measured) == (HAS_OPENVINO and bool(flags & {"avx512_bf16", "amx_bf16"}))
    assert ("int8" in measured) == bool(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    # A CPU without native bf16 or int8 kernels gets no emulated figure passed off as a floor.
    assert {f.precision for f in measure_floors(threads=1, size=128, runs=1, flags=frozenset())} == {"fp32"}


def test_model_flops_are_counted_over_conv_and_matmul_nodes(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lineguard.benchmarks.floors import model_gflops

    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    proj = numpy_helper.from_array(np.zeros((16, 5), np.float32), "p")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("MatMul", ["c", "p"], ["y"]),
        ],
        "count",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, proj],
    )
    path = tmp_path / "count.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    conv = 8 * 16 * 16 * (3 * 3 * 3)  # output elements x (Cin x kH x kW) multiply-adds
    matmul = (1 * 8 * 16 * 5) * 16  # output elements x K
    assert model_gflops(path) == pytest.approx(2 * (conv + matmul) / 1e9)


def test_floor_time_and_ratio_are_the_report_arithmetic(tiny_model: Path) -> None:
    from lineguard.benchmarks.floors import Floor, best_floors
    from lineguard.benchmarks.latency import add_floors

    report = run_latency_benchmark(
        tiny_model / "model.onnx", frames=2, warmup=0, frame_size=(160, 160), compare_ultralytics=False
    )
    start = [Floor("fp32", "numpy", 128, 2, 40.0), Floor("fp32", "openvino", 128, 2, 20.0)]
    end = [Floor("fp32", "openvino", 128, 2, 50.0)]  # the run's start was the busier moment
    floors = best_floors(start, end)
    assert sorted(f.gflops for f in floors) == [40.0, 50.0]
    add_floors(report, floors, 0.5)
    (edge,) = report.variants
    assert edge.computes_in == "fp32" and edge.floor_ms is not None
    assert edge.floor_ms == pytest.approx(1e3 * 0.5 / 50.0)  # the best fp32 throughput
    assert edge.floor_ratio == pytest.approx(edge.stages["inference"].p50_ms / edge.floor_ms)
    text = markdown(report)
    assert f"| {edge.floor_ms:.2f} | {edge.floor_ratio:.2f}x |" in text
    assert "| fp32 | openvino | 50 | 10.00 |" in text  # GFLOP/s, floor ms at 160 px
    assert "Not measured: bf16, int8" in text


def test_two_sizes_in_one_run_give_two_tables(tmp_path: Path) -> None:
    args = ["latency", "--imgsz", "64", "--imgsz", "96", "--frames", "1", "--warmup", "0"]
    args += ["--frame-size", "96x96", "--no-ultralytics", "--no-mqtt", "--floor-size", "128", "--allow-dirty"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "latency.json").read_text())
    assert [r["settings"]["imgsz"] for r in data["reports"]] == [64, 96]
    g64, g96 = (r["gflops"] for r in data["reports"])
    assert g96 / g64 == pytest.approx((96 / 64) ** 2, rel=0.05)  # a conv net's FLOPs scale with area
    text = (tmp_path / "out" / "latency.md").read_text()
    assert "## 64 px" in text and "## 96 px" in text
    assert text.count("### Against ultralytics and the floor") == 2
    assert text.count("## Compute floors of this machine") == 1
    assert "floor ms at 64 px | floor ms at 96 px" in text


def test_a_given_model_runs_at_its_own_size_only(tiny_model: Path, tmp_path: Path) -> None:
    args = ["latency", "--model", str(tiny_model / "model.onnx"), "--imgsz", "160", "--imgsz", "320"]
    result = CliRunner().invoke(bench, [*args, "--no-mqtt", "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, InputError)
    assert "runs at its own input size" in str(result.exception)
