"""``lineguard doctor`` names what is wrong with a station and how to fix it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from support.label_studio import LabelStudioInfo
from support.mosquitto import Broker

from lineguard.edge.doctor import run_checks
from lineguard.messages import ModelCard


def _config(tmp_path: Path, **sections: object) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def _by_name(config: Path) -> dict[str, tuple[bool, str, str]]:
    return {c.name: (c.ok, c.detail, c.fix) for c in run_checks(config, timeout_s=1.0)}


def test_stopped_broker_and_missing_model_are_reported(tmp_path: Path, broker: Broker) -> None:
    broker.stop()
    config = _config(
        tmp_path,
        mqtt={"host": broker.host, "port": broker.port},
        model={"path": str(tmp_path / "missing.onnx")},
    )
    checks = _by_name(config)
    ok, detail, fix = checks["broker"]
    assert not ok and f"127.0.0.1:{broker.port}" in detail and "start the broker" in fix
    ok, detail, _ = checks["model"]
    assert not ok and "missing.onnx does not exist" in detail
    assert checks["config"][0] and checks["camera"][0]


def test_healthy_station_passes_every_check(tmp_path: Path, broker: Broker, tiny_model: Path) -> None:
    config = _config(
        tmp_path,
        mqtt={"host": broker.host, "port": broker.port},
        model={"path": str(tiny_model / "model.onnx")},
    )
    assert all(ok for ok, _, _ in _by_name(config).values())


def test_tampered_model_is_caught(tmp_path: Path, tiny_model: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    config = _config(tmp_path, mqtt={"enabled": False}, model={"path": str(copy / "model.onnx")})
    ok, detail, _ = _by_name(config)["model"]
    assert not ok and "sha256" in detail


def test_misspelled_key_is_the_one_finding(tmp_path: Path) -> None:
    config = _config(tmp_path, mqtt={"hots": "broker"})
    checks = run_checks(config)
    assert [(c.name, c.ok) for c in checks] == [("config", False)]
    assert "mqtt.hots: unknown key" in checks[0].detail


def test_card_thresholds_that_hide_the_review_band_are_explained(tmp_path: Path, tiny_model: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    card = ModelCard.load(copy / "model_card.json")
    card.thresholds = dict.fromkeys(card.classes, 0.5) | {card.classes[0]: 0.05}
    card.save(copy / "model_card.json")
    config = _config(tmp_path, mqtt={"enabled": False}, model={"path": str(copy / "model.onnx")})
    ok, detail, fix = _by_name(config)["model"]
    assert not ok
    assert f"thresholds {card.classes[0]} 0.05 sit below policy.min_confidence 0.05 + " in detail
    assert "a doubtful unit PASSes instead of NO_DECISION/uncertain" in detail
    assert "set policy.class_thresholds to at least" in fix
    fixed = _config(
        tmp_path,
        mqtt={"enabled": False},
        model={"path": str(copy / "model.onnx")},
        policy={"class_thresholds": {card.classes[0]: 0.2}},
    )
    assert _by_name(fixed)["model"][0]


def _label_studio_config(tmp_path: Path, url: str, token: str) -> Path:
    token_file = tmp_path / "ls_token"
    token_file.write_text(token)
    sampling = {"label_studio_url": url, "label_studio_token_file": str(token_file)}
    return _config(tmp_path, mqtt={"enabled": False}, sampling=sampling)


def test_label_studio_token_it_refuses_is_reported(tmp_path: Path, label_studio: LabelStudioInfo) -> None:
    """A reachable Label Studio that refuses the token would lose every sample: not "ok"."""
    wrong = _label_studio_config(tmp_path, label_studio.url, "0" * 40)
    ok, detail, fix = _by_name(wrong)["label studio"]
    assert not ok and "refuses the token" in detail and "(401)" in detail
    assert "Account & Settings" in fix
    right = _label_studio_config(tmp_path, label_studio.url, label_studio.token)
    ok, detail, _ = _by_name(right)["label studio"]
    assert ok and "accepts the token" in detail


def test_missing_extra_for_label_studio_sampling_names_the_pip_install(
    tmp_path: Path, label_studio: LabelStudioInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _label_studio_config(tmp_path, label_studio.url, label_studio.token)
    assert _by_name(config)["extras"][0]  # everything installed here
    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # as on an '.[edge]' install
    ok, detail, fix = _by_name(config)["extras"]
    assert not ok and "sampling to Label Studio needs the Python package 'label_studio_sdk'" in detail
    assert fix == "pip install 'lineguard[label]'"
