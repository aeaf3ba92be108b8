"""``precision: auto``: a station runs the fastest certified variant its CPU supports, or fp32 and says why.

The variant files here are the tiny model's graph saved again under another name (another sha256):
what is under test is the choice, the certification and the hash check, not quantization (the
training export test certifies a real INT8 file). CPU flags are injected, so every case runs
the same on any x86 host; load-time timing is off (``confirm_runs: 0``) except where a fake clock
decides it. The variants here were certified on an AVX-512 CPU with VNNI and bf16.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from support.stations import running_station

from lineguard.config import ModelConfig
from lineguard.inference import Detector
from lineguard.messages import ModelCard, ModelVariant, sha256_file

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the variants run on OpenVINO (lineguard[edge])"
)

VNNI_AND_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
AUTO = ModelConfig(precision="auto", confirm_runs=0, warmup_runs=1, threads=1)


def _variant(
    name: str, sha256: str, *, file: str | None, certified: bool = True, kernels: str | None = None
) -> ModelVariant:
    return ModelVariant(
        name=name,
        precision=name,  # type: ignore[arg-type]
        runtime="openvino",
        file=file,
        sha256=sha256,
        map50=0.5,
        escape_rate=0.0,
        overkill_rate=0.0,
        certified=certified,
        reason="within 1 mAP50 point of fp32, no worse escape" if certified else "mAP50 drops 4.0 points",
        kernels=kernels or {"int8": "avx512_vnni", "bf16": "avx512_bf16"}[name],
    )


def _model_with_variants(
    tiny_model: Path, out: Path, *, int8_certified: bool = True, int8_kernels: str = "avx512_vnni"
) -> Path:
    """The tiny model with an int8 variant file beside it and bf16, both listed in its card."""
    shutil.copytree(tiny_model, out)
    graph = onnx.load(str(out / "model.onnx"))
    graph.producer_name = "variant"
    onnx.save(graph, str(out / "model_int8.onnx"))
    card = ModelCard.load(out / "model_card.json")
    variants = [
        _variant(
            "int8",
            sha256_file(out / "model_int8.onnx"),
            file="model_int8.onnx",
            certified=int8_certified,
            kernels=int8_kernels,
        ),
        _variant("bf16", card.sha256, file=None),
    ]
    card.model_copy(update={"variants": variants}).save(out / "model_card.json")
    return out


@pytest.mark.parametrize(
    ("flags", "runs"),
    [
        (VNNI_AND_BF16, "int8"),
        (frozenset({"avx2", "avx512f", "avx512_bf16"}), "bf16"),
        (frozenset({"avx2"}), "fp32"),
    ],
)
def test_auto_runs_the_fastest_certified_variant_the_cpu_supports(
    tiny_model: Path, tmp_path: Path, flags: frozenset[str], runs: str
) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m")

    with Detector.load(model / "model.onnx", AUTO, cpu_flags=flags) as detector:
        assert detector.precision == runs
        assert detector.precision_choice.startswith(f"auto: {runs}")
        assert detector.variant_failure is None
        assert detector.backend == "openvino:CPU"
        assert detector.detect(tiny_frame())[0] is not None


@pytest.mark.parametrize(
    ("flags", "int8_kernels", "runs", "said"),
    [
        (frozenset({"avx2"}), "avx2", "int8", ""),  # certified on AVX2: an AVX2 host runs it
        (
            frozenset({"avx2"}),
            "avx512_vnni",
            "fp32",
            "int8: certified on avx512_vnni kernels, this CPU runs avx2",
        ),
        (
            frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8"}),
            "avx512_vnni",
            "fp32",
            "int8: certified on avx512_vnni kernels, this CPU runs amx_int8",
        ),
    ],
)
def test_auto_trusts_a_certification_only_on_the_kernels_that_measured_it(
    tiny_model: Path, tmp_path: Path, flags: frozenset[str], int8_kernels: str, runs: str, said: str
) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m", int8_kernels=int8_kernels)

    with Detector.load(model / "model.onnx", AUTO, cpu_flags=flags) as detector:
        assert detector.precision == runs
        assert said in detector.precision_choice
        assert detector.variant_failure is None  # another CPU's certification is no fault


def test_a_variant_certified_before_kernels_were_recorded_is_not_run_by_auto(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m")
    card = ModelCard.load(model / "model_card.json")
    older = [v.model_copy(update={"kernels": None}) for v in card.variants]
    card.model_copy(update={"variants": older}).save(model / "model_card.json")

    with Detector.load(model / "model.onnx", AUTO, cpu_flags=VNNI_AND_BF16) as detector:
        assert detector.precision == "fp32"
        assert "int8: certified on unrecorded kernels, this CPU runs avx512_vnni" in detector.precision_choice


def test_auto_never_runs_an_uncertified_variant(tiny_model: Path, tmp_path: Path) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m", int8_certified=False)

    with Detector.load(model / "model.onnx", AUTO, cpu_flags=VNNI_AND_BF16) as detector:
        assert detector.precision == "bf16"  # the certified one, though int8 would be faster
        assert "int8: not certified (mAP50 drops 4.0 points)" in detector.precision_choice


def test_an_uncertified_variant_is_refused_even_when_asked_for(tiny_model: Path, tmp_path: Path) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m", int8_certified=False)
    cfg = AUTO.model_copy(update={"precision": "int8"})

    with Detector.load(model / "model.onnx", cfg, cpu_flags=VNNI_AND_BF16) as detector:
        assert detector.precision == "fp32"
        assert detector.variant_failure is not None
        assert "model.precision int8 refused" in detector.variant_failure
        assert "uncertified: mAP50 drops 4.0 points" in detector.variant_failure
        assert "\n" not in detector.variant_failure


def test_a_certified_variant_asked_for_runs(tiny_model: Path, tmp_path: Path) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m")
    cfg = AUTO.model_copy(update={"precision": "int8"})

    with Detector.load(model / "model.onnx", cfg, cpu_flags=frozenset({"avx512_vnni"})) as detector:
        assert (detector.precision, detector.variant_failure) == ("int8", None)
        assert detector.precision_choice == "int8 (configured, certified)"

    # Asked for by name on other kernels (as the registry's gate measures it), it runs and says so.
    with Detector.load(model / "model.onnx", cfg, cpu_flags=frozenset({"avx2"})) as detector:
        assert (detector.precision, detector.variant_failure) == ("int8", None)
        assert "certified on avx512_vnni kernels, this CPU runs avx2" in detector.precision_choice


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "sha256"),  # a truncated (corrupt) file
        (lambda p: p.unlink(), "model_int8.onnx is missing"),
    ],
)
def test_a_variant_that_cannot_load_falls_back_with_the_reason(
    tiny_model: Path, tmp_path: Path, damage: object, said: str
) -> None:
    model = _model_with_variants(tiny_model, tmp_path / "m")
    damage(model / "model_int8.onnx")  # type: ignore[operator]

    with Detector.load(model / "model.onnx", AUTO, cpu_flags=frozenset({"avx512_vnni"})) as detector:
        assert detector.precision == "fp32"
        assert detector.variant_failure is not None
        assert (
            "the int8 variant failed to load" in detector.variant_failure and said in detector.variant_failure
        )
        assert detector.variant_failure.endswith("running fp32")


def test_a_variant_is_kept_only_if_faster_at_load(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load-time check with a fake clock: a variant no faster than fp32 here is not kept."""
    model = _model_with_variants(tiny_model, tmp_path / "m")
    seconds = {"fp32": 0.004, "int8": 0.005, "bf16": 0.002}
    monkeypatch.setattr(Detector, "median_inference_s", lambda self, runs: seconds[self.precision])
    cfg = AUTO.model_copy(update={"confirm_runs": 3})

    with Detector.load(model / "model.onnx", cfg, cpu_flags=VNNI_AND_BF16) as detector:
        assert detector.precision == "bf16"
        assert "int8: not faster (5.00 ms vs fp32 4.00 ms at load)" in detector.precision_choice
        assert "bf16: 2.00 ms vs fp32 4.00 ms at load" in detector.precision_choice

    seconds["bf16"] = 0.006
    with Detector.load(model / "model.onnx", cfg, cpu_flags=VNNI_AND_BF16) as detector:
        assert detector.precision == "fp32"


def test_a_station_reports_its_choice_and_alerts_when_a_variant_falls_back(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lineguard.provenance.cpu_flags", lambda: VNNI_AND_BF16)
    model = _model_with_variants(tiny_model, tmp_path / "m")
    (model / "model_int8.onnx").write_bytes(b"not an onnx file")  # corrupt: the hash check fails

    with running_station(tmp_path / "data", model, model={"confirm_runs": 0}) as (daemon, base):
        status = httpx.get(f"{base}/v1/status", timeout=10).json()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        alerts = daemon.metrics.registry.get_sample_value(
            "lineguard_alerts_total", {"kind": "precision_fallback"}
        )

    assert status["precision"] == "bf16"  # the next certified variant this CPU runs
    assert status["precision_choice"].startswith("auto: bf16")
    assert alerts == 1
    model_info = next(line for line in metrics.splitlines() if line.startswith("lineguard_model_info{"))
    assert 'precision="bf16"' in model_info


def tiny_frame() -> npt.NDArray[np.uint8]:
    return np.full((120, 160, 3), 90, np.uint8)
