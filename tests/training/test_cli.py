"""User mistakes on ``lineguard train/evaluate/export`` end as one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--model", "yolov8n.pt"], "not a local file and weights cannot be downloaded"),
        (["--model", "resnet50"], "must be a model YAML or a local .pt"),
        (["--model", "yolov99z.yaml"], "neither a local file nor bundled"),
        (["--device", "0"], "no GPU"),
    ],
)
def test_train_refuses_what_it_cannot_do_offline(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    code = main(["train", "--data", str(synthetic_dataset), "--out", str(tmp_path / "run"), *extra])

    assert code == 2
    assert needle in _one_line_error(capsys)
    assert not (tmp_path / "run" / "weights").exists()  # nothing was trained


def test_train_refuses_a_modified_dataset_version(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(synthetic_dataset, data)
    next((data / "labels" / "train").glob("*.txt")).write_text("0 0.5 0.5 0.2 0.2\n")

    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run")])

    assert code == 2
    assert "no longer matches its manifest" in _one_line_error(capsys)


def test_train_config_typo_is_one_line(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("epoch: 3\n")

    code = main(
        ["train", "--data", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--config", str(config)]
    )

    assert code == 2
    assert "epoch: unknown key" in _one_line_error(capsys)


def test_export_of_a_folder_that_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(tmp_path)])

    assert code == 2
    assert "is not a lineguard training run" in _one_line_error(capsys)


def test_evaluate_refuses_other_model_files(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"x")

    code = main(["evaluate", "--model", str(model), "--data", str(synthetic_dataset)])

    assert code == 2
    assert "must be a .pt or .onnx file" in _one_line_error(capsys)


def test_evaluate_onnx_through_the_edge_detector(
    tiny_model: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An untrained model still yields a complete report: metrics, confusion matrix, unit rates."""
    import json

    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model / "model.onnx"),
            "--data",
            str(synthetic_dataset),
            "--json",
            str(out),
            "--max-escape",
            "0.1",
            "--curve",
            str(tmp_path / "curve.png"),
        ]
    )

    assert code == 0
    report = json.loads(out.read_text())
    assert report["units"] == 12
    assert set(report["per_class"]) <= {"scratch", "pit", "crack", "inclusion"}
    assert len(report["confusion_matrix"]["rows_true_cols_predicted"]) == 5
    assert 0.0 <= report["escape_rate"] <= 1.0
    assert report["calibration"]["max_escape"] == 0.1
    assert (tmp_path / "curve.png").is_file()
    assert "mAP50" in capsys.readouterr().out


def test_mlflow_asked_for_but_not_installed_is_one_line(
    synthetic_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on an install without it: import fails
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    code = main(["train", "--data", str(synthetic_dataset), "--out", str(tmp_path / "run")])

    assert code == 2
    assert "MLFLOW_TRACKING_URI is set" in _one_line_error(capsys)


@pytest.fixture(scope="module")
def model_with_int8(
    tiny_model: Path, synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model as an export leaves it with --int8: ``model/`` and ``model_int8/`` side by side."""
    import shutil

    from lineguard.messages import ModelCard, sha256_file
    from lineguard.training._parity import quantize_int8

    root = tmp_path_factory.mktemp("export")
    shutil.copytree(tiny_model, root / "model")
    card = ModelCard.load(root / "model" / "model_card.json")
    (root / "model_int8").mkdir()
    q_path = root / "model_int8" / "model.onnx"
    images = sorted((synthetic_dataset / "images" / "train").iterdir())[:4]
    quantize_int8(root / "model" / "model.onnx", q_path, images, card.input_size, runtime="onnxruntime")
    card.model_copy(update={"version": f"{card.version}-int8", "sha256": sha256_file(q_path)}).save(
        root / "model_int8" / "model_card.json"
    )
    return root / "model"


def test_calibrate_reports_escape_overkill_and_no_decision_per_variant_on_the_calib_split(
    model_with_int8: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from lineguard.messages import ModelCard

    report_path = tmp_path / "report.json"
    args = ["--model", str(model_with_int8), "--data", str(synthetic_dataset), "--max-escape", "0.1"]
    code = main(["calibrate", *args, "--write", "--json", str(report_path)])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "split calib, review band 0.1 (NO_DECISION), target escape 10.00%" in out
    for variant in ("fp32", "int8"):
        assert f"\n{variant}: " in out and "on 12 units" in out
        line = next(x for x in out.splitlines() if x.startswith(f"{variant} ("))
        assert "escape " in line and "overkill " in line and "NO_DECISION " in line and "on calib" in line
    assert "| threshold (all classes) | escape % | overkill % | NO_DECISION % |" in out
    report = json.loads(report_path.read_text())
    assert report["split"] == "calib" and {"fp32", "int8"} <= set(report["variants"])
    for folder in (model_with_int8, model_with_int8.parent / "model_int8"):
        card = ModelCard.load(folder / "model_card.json")  # still a valid card, sha256 unchanged
        variant = "int8" if folder.name.endswith("int8") else "fp32"
        mine = report["variants"][variant]
        assert card.achieved is not None and card.achieved.split == "calib"
        assert card.achieved.no_decision_rate == mine["no_decision_rate"]
        assert card.achieved.review_band == 0.1
        assert card.thresholds == mine["thresholds"]
        assert card.targets is not None and card.targets.max_escape == 0.1


def test_calibrate_without_a_calib_split_warns_that_val_is_optimistic(
    tiny_model: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(synthetic_dataset, data, ignore=shutil.ignore_patterns("calib"))

    code = main(["calibrate", "--model", str(tiny_model / "model_card.json"), "--data", str(data)])

    captured = capsys.readouterr()
    assert code == 0
    assert "has no calib split" in captured.err and "optimistic" in captured.err
    assert "split val" in captured.out
    assert "NO_DECISION" in captured.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--split", "test"], "has no images in split 'test'; pick another --split"),
        (["--model", "README.md"], "--model must be an exported model folder"),
    ],
)
def test_calibrate_mistakes_are_one_line(
    tiny_model: Path,
    synthetic_dataset: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    base = ["calibrate", "--model", str(tiny_model), "--data", str(synthetic_dataset)]
    code = main(base + args)

    assert code == 2
    assert needle in _one_line_error(capsys)
