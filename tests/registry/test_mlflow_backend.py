"""The MLflow back-end keeps the registry of record: another machine with an empty folder sees the
same versions, stages (as MLflow aliases), history, gate reports and signed releases, and stations
still fetch through the registry's own artifact path.

The rules shared with the file back-end are tested on both by the rest of this folder (the
``registry_backend`` fixture); these tests cover what only a server-held registry has.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from support.mlflow import mlflow_registry
from support.mosquitto import Broker, free_port
from support.mqtt import subscribed, wait_until

from lineguard.cli import main
from lineguard.edge.control import parse_control
from lineguard.errors import ModelError
from lineguard.messages import DesiredModel
from lineguard.registry import ArtifactServer, Stage
from lineguard.releases import load_public_keys, verify_release

TOKEN = "s3cret-token-for-tests"


def _latest(broker: Broker, topic: str) -> DesiredModel:
    """The retained model message a station connecting now would receive."""
    with subscribed(broker.host, broker.port, topic) as sub:
        wait_until(lambda: bool(sub.messages), 5.0, f"the retained message on {topic}")
        (_, payload, retained), *_ = sub.messages
    assert retained
    return parse_control(DesiredModel, payload)


def test_a_second_machine_reads_versions_aliases_and_artifacts_from_mlflow(
    mlflow_url: str, models: dict[str, Path], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    here = mlflow_registry(mlflow_url, tmp_path / "here", prefix)
    for key in ("weak", "good", "good3"):
        here.add(models[key], by="ci")
    here.promote("signal", "1.0.0", Stage.PRODUCTION, by="bob", why="first")
    here.promote("signal", "2.0.0", Stage.STAGING, by="bob", why="shadow")

    client = MlflowClient(tracking_uri=mlflow_url)
    aliases = {
        alias: client.get_model_version_by_alias(f"{prefix}signal", alias).tags["lineguard.version"]
        for alias in ("production", "staging", "candidate")
    }
    assert aliases == {"production": "1.0.0", "staging": "2.0.0", "candidate": "3.0.0"}

    there = mlflow_registry(mlflow_url, tmp_path / "there", prefix)  # nothing on disk yet
    assert [(v.version, v.stage) for v in there.versions("signal")] == [
        ("1.0.0", Stage.PRODUCTION),
        ("2.0.0", Stage.STAGING),
        ("3.0.0", Stage.CANDIDATE),
    ]
    assert [(e.action, e.version, e.who) for e in there.history("signal")] == [
        (e.action, e.version, e.who) for e in here.history("signal")
    ]
    good3 = there.get("signal", "3.0.0")
    assert good3.card == here.get("signal", "3.0.0").card
    assert not there.blob_path(good3.sha256).exists()
    with ArtifactServer(there, TOKEN) as server:  # a station asks for a blob this folder never held
        resp = httpx.get(
            f"{server.url}/v1/artifacts/{good3.sha256}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert resp.status_code == 200
    assert resp.content == (models["good3"] / "model.onnx").read_bytes()

    there.promote("signal", "2.0.0", Stage.PRODUCTION, force=True, why="hotfix", by="dave")
    assert here.get("signal").version == "2.0.0"
    assert (tmp_path / "there" / "models" / "signal" / "production" / "model.onnx").is_file()


def test_cli_on_mlflow_gates_signs_rolls_out_and_rolls_back(
    mlflow_url: str,
    models: dict[str, Path],
    eval_dir: Path,
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    keys = tmp_path / "keys"
    assert main(["registry", "keygen", "--out", str(keys)]) == 0
    config = tmp_path / "lineguard.yaml"
    config.write_text(
        f"registry:\n  root: {tmp_path / 'reg'}\n  mlflow_prefix: {prefix}\n  eval_set: {eval_dir}\n"
        f"  signing_key: {keys / 'registry-signing.key'}\n"
        "  gate:\n    max_latency_increase: 2.0\n    latency_slack_ms: 20\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
    )
    base = ["registry", "--config", str(config), "--registry-uri", f"mlflow+{mlflow_url}"]
    for key in ("weak", "good"):
        assert main([*base, "add", str(models[key])]) == 0
    assert main([*base, "follow", "line1/st1", "signal"]) == 0
    assert main([*base, "promote", "signal:1.0.0", "--to", "production", "--no-refresh-labels"]) == 0
    assert main([*base, "promote", "signal:2.0.0", "--to", "production", "--no-refresh-labels"]) == 0
    assert "signal:2.0.0 is now production" in capsys.readouterr().out

    desired = _latest(broker, "lineguard/line1/st1/model")
    release = verify_release(desired, load_public_keys([keys / "registry-signing.pub"]))
    assert (release.version, release.sha256) == ("2.0.0", desired.sha256)
    assert desired.url.startswith("file://") and Path(desired.url.removeprefix("file://")).is_file()

    client = MlflowClient(tracking_uri=mlflow_url)
    (held,) = [
        v
        for v in client.search_model_versions(f"name = '{prefix}signal'")
        if v.tags["lineguard.version"] == "2.0.0"
    ]
    run_id = held.run_id
    assert run_id is not None
    reports = [a.path for a in client.list_artifacts(run_id, "gate")]
    assert len(reports) == 1
    names = {Path(a.path).name for a in client.list_artifacts(run_id, reports[0])}
    assert names == {"gate_report.json", "gate_report.md"}
    events = [json.loads(v) for k, v in held.tags.items() if k.startswith("lineguard.event.")]
    (rollout,) = [e for e in events if e["action"] == "rollout"]
    assert rollout["detail"]["payload"]["signature"] == desired.signature  # the signed release record
    card = (tmp_path / "reg" / "cards" / "signal" / "2.0.0.json").read_bytes()
    assert release.card_sha256 == hashlib.sha256(card).hexdigest()

    other = ["registry", "--root", str(tmp_path / "elsewhere"), "--config", str(config)]
    other += ["--registry-uri", f"mlflow+{mlflow_url}"]
    assert main([*other, "rollback", "signal", "--reason", "NO_DECISION spike"]) == 0
    assert _latest(broker, "lineguard/line1/st1/model").version == "1.0.0"
    assert main([*other, "list", "signal"]) == 0
    assert main([*other, "history", "signal"]) == 0
    out = capsys.readouterr().out
    assert "1.0.0    production" in out and "2.0.0    archived" in out
    assert "line1/st1  signal" in out
    assert "rollback" in out and "NO_DECISION spike" in out
    assert (
        client.get_model_version_by_alias(f"{prefix}signal", "production").tags["lineguard.version"]
        == "1.0.0"
    )


def test_a_registry_uri_that_is_not_mlflow_or_not_reachable_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ["registry", "--root", str(tmp_path / "reg")]
    assert main([*root, "--registry-uri", "http://127.0.0.1:5000", "list"]) == 2
    assert "mlflow+http://HOST:PORT" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert main([*root, "--registry-uri", f"mlflow+http://127.0.0.1:{free_port()}", "list"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach MLflow at http://127.0.0.1:" in err and "Traceback" not in err


def test_a_version_edited_in_mlflow_is_refused(
    mlflow_url: str, models: dict[str, Path], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    mlflow_registry(mlflow_url, tmp_path / "here", prefix).add(models["weak"])
    client = MlflowClient(tracking_uri=mlflow_url)
    (held,) = client.search_model_versions(f"name = '{prefix}signal'")
    client.set_model_version_tag(held.name, held.version, "lineguard.sha256", "0" * 64)
    with pytest.raises(ModelError, match=r"its card and its lineguard\.sha256 tag disagree"):
        mlflow_registry(mlflow_url, tmp_path / "there", prefix).get("signal", "1.0.0")
