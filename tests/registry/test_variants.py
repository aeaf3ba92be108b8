"""Certified variants through the registry: stored beside the model, re-checked by the gate (which
decertifies one its frozen set does not bear out, in the card the registry serves), signed with the
card, fetched by a hot swap and verified before a station runs them.

The hand-built signal models stand in for variants: the good graph saved again is a variant that
keeps fp32's accuracy; the weak graph (misses faint defects) is one whose certificate is a lie.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import uuid
from pathlib import Path

import httpx
import onnx
import pytest
from support.mlflow import mlflow_registry

from lineguard.config import GateConfig, LineguardConfig
from lineguard.edge import prepare_model
from lineguard.edge.control import parse_control
from lineguard.errors import ModelError
from lineguard.messages import DesiredModel, ModelCard, ModelVariant, sha256_file
from lineguard.registry import ArtifactServer, EvalSet, Registry, Stage, desired_payload, run_gate
from lineguard.releases import Signer, generate_keypair

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the variants run on OpenVINO (lineguard[edge])"
)
MARGINS = GateConfig(max_latency_increase=2.0, latency_slack_ms=20.0)


def _with_int8(model: Path, variant_graph: Path, out: Path, version: str) -> Path:
    """``model`` as a new version whose card certifies ``variant_graph`` as its int8 variant."""
    shutil.copytree(model, out)
    graph = onnx.load(str(variant_graph))
    graph.producer_name = "int8-variant"  # another file, another sha256
    onnx.save(graph, str(out / "model_int8.onnx"))
    card = ModelCard.load(out / "model_card.json")
    variant = ModelVariant(
        name="int8",
        precision="int8",
        runtime="openvino",
        file="model_int8.onnx",
        sha256=sha256_file(out / "model_int8.onnx"),
        map50=card.metrics.map50 if card.metrics else 0.9,
        escape_rate=0.0,
        certified=True,
        reason="within 1 mAP50 point of fp32, no worse escape",
        kernels="avx512_vnni",
    )
    card.model_copy(update={"version": version, "variants": [variant]}).save(out / "model_card.json")
    return out


def test_registry_keeps_variant_files_beside_the_model_and_refuses_a_changed_one(
    registry: Registry, models: dict[str, Path], tmp_path: Path
) -> None:
    folder = _with_int8(models["good"], models["good"] / "model.onnx", tmp_path / "v", "2.1.0")
    registry.add(folder)
    registry.promote("signal", "2.1.0", Stage.PRODUCTION)

    served = registry.root / "models" / "signal" / "production" / "model_int8.onnx"
    assert sha256_file(served) == sha256_file(folder / "model_int8.onnx")

    changed = _with_int8(models["good"], models["weak"] / "model.onnx", tmp_path / "w", "2.2.0")
    card = ModelCard.load(changed / "model_card.json")
    (changed / "model_int8.onnx").write_bytes(b"swapped after export")
    with pytest.raises(ModelError, match=r"model_int8.onnx has sha256 .*variant file changed after export"):
        registry.add(changed)
    assert registry.versions("signal")[-1].version == "2.1.0"
    assert card.variants[0].certified


def test_gate_certifies_a_variant_only_where_the_frozen_set_bears_it_out(
    registry: Registry, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    registry.add(_with_int8(models["good"], models["good"] / "model.onnx", tmp_path / "ok", "2.1.0"))
    registry.add(_with_int8(models["good"], models["weak"] / "model.onnx", tmp_path / "lie", "2.2.0"))

    kept = run_gate(registry, "signal", "2.1.0", EvalSet.load(eval_dir), MARGINS)
    lie = run_gate(registry, "signal", "2.2.0", EvalSet.load(eval_dir), MARGINS)

    assert kept.passed and not kept.decertified, kept.summary
    assert registry.get("signal", "2.1.0").card.variants[0].certified
    # The variant's claim is false: reported, decertified; the fp32 model is not refused for it.
    assert lie.passed and lie.failed == [], lie.summary
    (check,) = [c for c in lie.checks if c.metric == "variant_int8"]
    assert not check.passed and check.informational
    assert lie.decertified["int8"].startswith("gate: not certified: escape is worse than fp32")
    assert "decertified int8 (gate: not certified: escape is worse" in lie.summary
    assert "| variant_int8 |" in lie.markdown() and "**decertified**" in lie.markdown()

    stored = registry.get("signal", "2.2.0").card.variants[0]
    assert (stored.certified, stored.reason) == (False, lie.decertified["int8"])
    for served_card in (
        registry.card_path("signal", "2.2.0"),
        registry.root / "models" / "signal" / "2.2.0" / "model_card.json",
    ):
        assert not ModelCard.load(served_card).variants[0].certified
    decertify = registry.history("signal")[-1]
    assert (decertify.action, decertify.version) == ("decertify", "2.2.0")
    assert decertify.detail["variants"] == lie.decertified and decertify.who

    # Adding the exported folder again is the same version: only the gate's withdrawal differs.
    assert registry.add(tmp_path / "lie").card == registry.get("signal", "2.2.0").card

    served = registry.root / "models" / "signal" / "2.1.0" / "model_int8.onnx"
    served.write_bytes(served.read_bytes()[:-10])  # the file changed after it was stored
    broken = run_gate(registry, "signal", "2.1.0", EvalSet.load(eval_dir), MARGINS)
    assert broken.passed and "cannot run: the int8 variant failed to load" in broken.summary
    assert broken.decertified["int8"].startswith("gate: cannot run: the int8 variant failed to load")
    assert not registry.get("signal", "2.1.0").card.variants[0].certified


def test_gate_promotes_fp32_over_a_false_variant_and_the_station_runs_fp32(
    registry: Registry,
    models: dict[str, Path],
    eval_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lineguard.provenance.cpu_flags", lambda: frozenset({"avx512_vnni"}))
    private, public = generate_keypair(tmp_path / "keys")
    registry.add(models["weak"])
    registry.promote("signal", "1.0.0", Stage.PRODUCTION)
    registry.add(_with_int8(models["good"], models["weak"] / "model.onnx", tmp_path / "lie", "2.2.0"))

    report = run_gate(registry, "signal", "2.2.0", EvalSet.load(eval_dir), MARGINS)
    assert report.passed and set(report.decertified) == {"int8"}, report.summary
    mv = registry.promote("signal", "2.2.0", Stage.PRODUCTION, gate=report.audit())
    assert registry.history("signal")[-1].detail["gate"]["decertified"] == report.decertified

    desired = parse_control(DesiredModel, desired_payload(registry, mv, "", Signer.from_file(private)))
    served = registry.card_path("signal", "2.2.0").read_bytes()
    assert desired.release is not None
    assert desired.release.card_sha256 == hashlib.sha256(served).hexdigest()  # signs the gate's card
    cfg = LineguardConfig.model_validate(
        {
            "station": {"data_dir": str(tmp_path / "station")},
            "registry": {"root": str(registry.root), "public_keys": [str(public)]},
            "model": {"confirm_runs": 0, "threads": 1, "warmup_runs": 1},
        }
    )
    with prepare_model(desired, cfg) as detector:  # verified against the release, then auto picks
        assert (detector.precision, detector.variant_failure) == ("fp32", None)
        assert "int8: not certified (gate: not certified: escape is worse" in detector.precision_choice
    fetched = cfg.station.data_dir / "models" / desired.sha256
    assert not ModelCard.load(fetched / "model_card.json").variants[0].certified
    assert not (fetched / "model_int8.onnx").exists()  # a decertified variant is not even fetched


def test_another_machine_serves_the_card_the_gate_left_not_its_cached_export(
    mlflow_url: str, models: dict[str, Path], eval_dir: Path, tmp_path: Path
) -> None:
    """MLflow: a registry folder that cached the exported card serves the gate's card once replaced."""
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    here = mlflow_registry(mlflow_url, tmp_path / "here", prefix)
    here.add(_with_int8(models["good"], models["weak"] / "model.onnx", tmp_path / "lie", "2.2.0"))
    there = mlflow_registry(mlflow_url, tmp_path / "there", prefix)
    assert there.get("signal", "2.2.0").card.variants[0].certified  # cached as exported

    assert run_gate(here, "signal", "2.2.0", EvalSet.load(eval_dir), MARGINS).decertified
    token = "s3cret-token-for-tests"
    with ArtifactServer(there, token) as server:
        resp = httpx.get(
            f"{server.url}/v1/cards/signal/2.2.0.json", headers={"Authorization": f"Bearer {token}"}
        )
    assert resp.status_code == 200
    assert resp.content == here.card_path("signal", "2.2.0").read_bytes()
    assert not ModelCard.model_validate_json(resp.content).variants[0].certified


def test_hot_swap_fetches_the_signed_variant_and_the_station_runs_it(
    registry: Registry,
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lineguard.provenance.cpu_flags", lambda: frozenset({"avx512_vnni"}))
    private, public = generate_keypair(tmp_path / "keys")
    registry.add(_with_int8(models["good"], models["good"] / "model.onnx", tmp_path / "v", "2.1.0"))
    mv = registry.get("signal", "2.1.0")
    desired = parse_control(DesiredModel, desired_payload(registry, mv, "", Signer.from_file(private)))
    cfg = LineguardConfig.model_validate(
        {
            "station": {"data_dir": str(tmp_path / "station")},
            "registry": {"root": str(registry.root), "public_keys": [str(public)]},
            "model": {"confirm_runs": 0, "threads": 1, "warmup_runs": 1},
        }
    )

    with prepare_model(desired, cfg) as detector:
        assert (detector.precision, detector.variant_failure) == ("int8", None)
    fetched = cfg.station.data_dir / "models" / desired.sha256 / "model_int8.onnx"
    assert sha256_file(fetched) == mv.card.variants[0].sha256

    # A variant blob altered in the registry after signing: refused by its hash, fp32 runs, alerted.
    fetched.unlink()
    blob = registry.blob_path(mv.card.variants[0].sha256)
    blob.write_bytes(blob.read_bytes()[:-10])
    with prepare_model(desired, cfg) as detector:
        assert detector.precision == "fp32"
        assert (
            detector.variant_failure is not None and "model_int8.onnx is missing" in detector.variant_failure
        )
