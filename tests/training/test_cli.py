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
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here; the run would log to it")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    code = main(["train", "--data", str(synthetic_dataset), "--out", str(tmp_path / "run")])

    assert code == 2
    assert "MLFLOW_TRACKING_URI is set" in _one_line_error(capsys)
