"""Certified variants through the registry: stored beside the model, re-certified by the gate, signed
with the card, fetched by a hot swap and verified before a station runs them.

The hand-built signal models stand in for variants: the good graph saved again is a variant that
keeps fp32's accuracy; the weak graph (misses faint defects) is one whose certificate is a lie.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import onnx
import pytest

from lineguard.config import GateConfig, LineguardConfig
from lineguard.edge import prepare_model
from lineguard.edge.control import parse_control
from lineguard.errors import ModelError
from lineguard.messages import DesiredModel, ModelCard, ModelVariant, sha256_file
from lineguard.registry import EvalSet, Registry, Stage, desired_payload, run_gate
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

    assert kept.passed, kept.summary
    assert [c.metric for c in lie.failed] == ["variant_int8"]
    assert "not certified: escape is worse than fp32" in lie.summary

    served = registry.root / "models" / "signal" / "2.1.0" / "model_int8.onnx"
    served.write_bytes(served.read_bytes()[:-10])  # the file changed after it was stored
    broken = run_gate(registry, "signal", "2.1.0", EvalSet.load(eval_dir), MARGINS)
    assert [c.metric for c in broken.failed] == ["variant_int8"]
    assert "cannot run: the int8 variant failed to load" in broken.summary


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
