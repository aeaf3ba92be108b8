"""The model store: immutable content-addressed versions, stages, one-command rollback, audit log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lineguard.cli import main
from lineguard.errors import InputError, ModelError
from lineguard.messages import ModelCard, sha256_file
from lineguard.registry import Registry, Stage

PASSED = {"passed": True, "summary": "ok"}


def test_add_stores_blob_by_sha256_with_lineage(registry: Registry, models: dict[str, Path]) -> None:
    mv = registry.add(models["good"], by="alice", why="first export")
    assert mv.ref == "signal:2.0.0"
    assert mv.stage is Stage.CANDIDATE
    assert registry.blob_path(mv.sha256).read_bytes() == (models["good"] / "model.onnx").read_bytes()
    assert sha256_file(registry.blob_path(mv.sha256)) == mv.sha256
    assert ModelCard.load(registry.card_path("signal", "2.0.0")).sha256 == mv.sha256
    assert (mv.parent, mv.dataset_hash, mv.training_run) == ("1.0.0", "d" * 64, "run-7")
    assert mv.added_by == "alice"


def test_add_finds_the_export_inside_a_run_folder(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "r1"
    shutil.copytree(models["weak"], run / "export")
    (run / "results.csv").write_text("epoch\n")
    assert registry.add(run).ref == "signal:1.0.0"


def test_same_version_with_other_bytes_is_refused(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    first = registry.add(models["weak"])
    assert registry.add(models["weak"]) == first  # the very same files again: no-op
    other = tmp_path / "other"
    shutil.copytree(models["good"], other)
    card = ModelCard.load(other / "model_card.json")
    card.model_copy(update={"version": "1.0.0"}).save(other / "model_card.json")
    with pytest.raises(ModelError, match=r"signal:1.0.0 is already in the registry with another ONNX bytes"):
        registry.add(other)
    assert [v.sha256 for v in registry.versions("signal")] == [first.sha256]


def test_add_refuses_an_onnx_that_does_not_match_its_card(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(models["good"], broken)
    with (broken / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelError, match="the file changed after export"):
        registry.add(broken)
    assert registry.versions() == []


def test_promote_rollback_archive_and_history(registry: Registry, models: dict[str, Path]) -> None:
    for key in ("weak", "good", "good3"):
        registry.add(models[key], by="ci")
    registry.promote("signal", "1.0.0", Stage.PRODUCTION, by="bob", why="first model")
    registry.promote("signal", "2.0.0", Stage.STAGING, by="bob", why="shadow it")
    with pytest.raises(InputError, match="needs the promotion gate"):
        registry.promote("signal", "2.0.0", Stage.PRODUCTION)
    with pytest.raises(ModelError, match=r"promotion gate refused signal:2.0.0 against signal:1.0.0: worse"):
        registry.promote("signal", "2.0.0", Stage.PRODUCTION, gate={"passed": False, "summary": "worse"})
    registry.promote("signal", "2.0.0", Stage.PRODUCTION, by="bob", why="better", gate=PASSED)
    registry.promote("signal", "3.0.0", Stage.PRODUCTION, by="bob", why="even better", gate=PASSED)
    assert registry.get("signal").version == "3.0.0"  # no version: the production one
    assert registry.get("signal", "2.0.0").stage is Stage.ARCHIVED

    assert registry.rollback("signal", by="carol", why="NO_DECISION spike").version == "2.0.0"
    assert registry.get("signal", "3.0.0").stage is Stage.ARCHIVED
    assert registry.rollback("signal", by="carol").version == "1.0.0"
    with pytest.raises(InputError, match="first production version"):
        registry.rollback("signal")
    with pytest.raises(InputError, match="is in production"):
        registry.archive("signal", "1.0.0")

    actions = [(e.action, e.version, e.who) for e in registry.history("signal")]
    assert actions[:3] == [("add", "1.0.0", "ci"), ("add", "2.0.0", "ci"), ("add", "3.0.0", "ci")]
    assert ("rollback", "2.0.0", "carol") in actions
    assert actions[-1] == ("rollback", "1.0.0", "carol")
    rolled = [e for e in registry.history("signal") if e.action == "rollback"]
    assert rolled[0].why == "NO_DECISION spike"
    assert rolled[0].detail["from_version"] == "3.0.0"


def test_force_needs_a_reason_and_is_audited(registry: Registry, models: dict[str, Path]) -> None:
    registry.add(models["weak"])
    registry.add(models["good"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    with pytest.raises(InputError, match="--force needs a --reason"):
        registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True)
    registry.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, by="dave", why="hotfix for line 3")
    event = registry.history("signal")[-1]
    assert (event.action, event.who, event.why, event.detail["forced"]) == (
        "promote",
        "dave",
        "hotfix for line 3",
        True,
    )


def test_who_defaults_to_the_user_environment(
    registry: Registry, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "erin")
    registry.add(models["weak"])
    assert registry.history("signal")[0].who == "erin"


def test_cli_add_list_show_promote_history(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["registry", "--root", str(tmp_path / "reg")]
    assert main([*root, "add", str(models["weak"]), "--by", "ci"]) == 0
    assert main([*root, "add", str(models["good"]), "--by", "ci"]) == 0
    assert main([*root, "promote", "signal:1.0.0", "--to", "production", "--by", "bob"]) == 0
    assert main([*root, "list"]) == 0
    assert main([*root, "show", "signal"]) == 0
    assert main([*root, "history", "signal"]) == 0
    out = capsys.readouterr().out
    assert "signal:1.0.0 is now production" in out
    assert "1.0.0    production" in out and "2.0.0    candidate" in out
    assert "parent        -" in out  # show prints the production version's lineage
    assert "calibration   uncalibrated (thresholds not tuned for an escape target)" in out
    assert "promote  1.0.0" in out and "bob" in out

    assert main([*root, "promote", "signal:2.0.0", "--to", "production", "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert main([*root, "show", "signal:9.9"]) == 2
    assert "no model signal:9.9 in the registry; versions of signal: 1.0.0, 2.0.0" in capsys.readouterr().err
