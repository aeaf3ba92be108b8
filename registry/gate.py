"""The promotion gate: a candidate reaches production only if it is not worse than production.

Both models are evaluated on the same frozen evaluation set (its digest is in the report) by an
injected ``Evaluator``, by default ``evaluate_model`` (the edge's own ONNX detector and verdict
policy, so the numbers are the station's numbers). Each metric gets a check against a margin from
``GateConfig``: mAP50 (or unit accuracy when the set has no boxes), escape rate, overkill rate,
NO_DECISION rate and median latency; golden images must run without error. Each variant the
candidate's card certifies is checked again on the same set; one that fails does not refuse the
candidate (fp32 is what the comparison judges) but is decertified: the registry's card of the
version says ``certified: false`` from then on (``Registry.decertify``), so no station runs it and
the next signed release covers that card. The result is written
as ``gate_report.json`` and ``gate_report.md`` (kept with the version by the registry's back-end: an
MLflow registry stores them as artifacts); the registry records its summary in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from lineguard.config import GateConfig, LineguardConfig, ModelConfig, PolicyConfig
from lineguard.errors import InputError, LineguardError
from lineguard.messages import Measured, ModelCard, certify_variant
from lineguard.registry.evaluation import EvalResult, EvalSet, Evaluator, evaluate_model, golden_problems
from lineguard.registry.store import ONNX_FILE, Registry

__all__ = [
    "GATE_REASON",
    "GATE_REPORT_SCHEMA",
    "GateCheck",
    "GateReport",
    "GoldenRunner",
    "VariantEvaluator",
    "compare",
    "gate_from_config",
    "run_gate",
    "target_check",
]

GATE_REPORT_SCHEMA: Final = "lineguard.gate_report/1"
# How the reason of a variant the gate decertified begins, on the card the registry serves.
GATE_REASON: Final = "gate: "

# (onnx path, card, golden folder) -> list of problems (empty = every golden image ran)
GoldenRunner = Callable[[Path, ModelCard, Path], list[str]]
# (onnx path, card, eval set, variant name) -> the variant's result, run as a station runs it
VariantEvaluator = Callable[[Path, ModelCard, EvalSet, str], EvalResult]


@dataclass(frozen=True)
class GateCheck:
    """One comparison: ``candidate`` must satisfy ``limit`` (``<=`` or ``>=``) derived from production.

    An ``informational`` check (a variant's re-check) is reported but does not decide the gate.
    """

    metric: str
    candidate: float | None
    production: float | None
    limit: float | None
    direction: str  # "max" (candidate <= limit) or "min" (candidate >= limit)
    passed: bool
    note: str = ""
    informational: bool = False


@dataclass(frozen=True)
class GateReport:
    candidate: str
    production: str | None
    eval_set: str
    eval_digest: str
    passed: bool
    checks: tuple[GateCheck, ...]
    results: dict[str, dict[str, Any]]
    # variant name -> the reason its card now gives for not being certified (set by the gate)
    decertified: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def failed(self) -> list[GateCheck]:
        """The checks that refuse the candidate (informational ones never do)."""
        return [c for c in self.checks if not c.passed and not c.informational]

    @property
    def summary(self) -> str:
        gating = sum(not c.informational for c in self.checks)
        verdict = (
            f"{self.candidate} passed all {gating} checks"
            if self.passed
            else "; ".join(_describe(c) for c in self.failed)
        )
        if self.decertified:
            verdict += "; decertified " + ", ".join(f"{n} ({why})" for n, why in self.decertified.items())
        return verdict

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["checks"] = [asdict(c) for c in self.checks]
        return {"schema": GATE_REPORT_SCHEMA, **body, "summary": self.summary}

    def audit(self, report_dir: Path | None = None) -> dict[str, Any]:
        """The small dict the registry keeps in the promotion event."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "summary": self.summary,
            "eval_digest": self.eval_digest,
        }
        if self.decertified:
            out["decertified"] = dict(self.decertified)
        if report_dir is not None:
            out["report"] = str(report_dir / "gate_report.json")
        return out

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``gate_report.json`` and ``gate_report.md`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "gate_report.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        md_path = out_dir / "gate_report.md"
        md_path.write_text(self.markdown())
        return md_path, json_path

    def markdown(self) -> str:
        lines = [
            f"# Promotion gate: {self.candidate} vs {self.production or '(no production)'}",
            "",
            f"**{'PASSED' if self.passed else 'REFUSED'}** — {self.summary}",
            "",
            f"Evaluation set: `{self.eval_set}` (digest `{self.eval_digest[:16]}`), {self.created_at}",
            "",
            "| check | candidate | production | limit | result |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            sign = "≤" if c.direction == "max" else "≥"
            limit = f"{sign} {_fmt(c.limit)}" if c.limit is not None else "—"
            verdict = "ok" if c.passed else ("**decertified**" if c.informational else "**worse**")
            note = f" ({c.note})" if c.note else ""
            lines.append(
                f"| {c.metric} | {_fmt(c.candidate)} | {_fmt(c.production)} | {limit} | {verdict}{note} |"
            )
        if self.decertified:
            lines += [
                "",
                "Variants decertified (the registry's card no longer certifies them; stations run fp32):",
            ]
            lines += [f"- `{n}`: {why}" for n, why in self.decertified.items()]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _describe(check: GateCheck) -> str:
    if check.limit is None or check.production is None:
        return f"{check.metric}: {check.note or 'failed'}"
    word = "above" if check.direction == "max" else "below"
    return (
        f"{check.metric} {_fmt(check.candidate)} is {word} the limit {_fmt(check.limit)} "
        f"(production {_fmt(check.production)})"
    )


def _check_max(metric: str, cand: float, prod: float, limit: float) -> GateCheck:
    return GateCheck(metric, cand, prod, limit, "max", cand <= limit + 1e-12)


def _quality_check(candidate: EvalResult, production: EvalResult, margins: GateConfig) -> GateCheck:
    """mAP50 may drop by at most the margin; on a set without boxes, unit accuracy stands in for it."""
    if candidate.map50 is not None and production.map50 is not None:
        limit = production.map50 - margins.max_map50_drop
        return GateCheck("map50", candidate.map50, production.map50, limit, "min", candidate.map50 >= limit)
    limit = production.unit_accuracy - margins.max_map50_drop
    return GateCheck(
        "unit_accuracy",
        candidate.unit_accuracy,
        production.unit_accuracy,
        limit,
        "min",
        candidate.unit_accuracy >= limit,
        "no boxes in the set",
    )


def _rate_checks(candidate: EvalResult, production: EvalResult, margins: GateConfig) -> list[GateCheck]:
    """Escape, overkill and NO_DECISION rates may each rise by at most their margin."""
    return [
        _check_max(metric, cand, prod, prod + margin)
        for metric, cand, prod, margin in (
            ("escape_rate", candidate.escape_rate, production.escape_rate, margins.max_escape_increase),
            (
                "overkill_rate",
                candidate.overkill_rate,
                production.overkill_rate,
                margins.max_overkill_increase,
            ),
            (
                "no_decision_rate",
                candidate.no_decision_rate,
                production.no_decision_rate,
                margins.max_no_decision_increase,
            ),
        )
    ]


def _latency_check(candidate: EvalResult, production: EvalResult, margins: GateConfig) -> GateCheck:
    """Median latency may grow by a share plus a fixed slack (timing is noisy at small values)."""
    base = production.latency_median_ms
    limit = base * (1 + margins.max_latency_increase) + margins.latency_slack_ms
    return _check_max("latency_median_ms", candidate.latency_median_ms, base, limit)


def _errors_check(candidate: EvalResult) -> GateCheck:
    """A candidate that raised on any evaluation image fails, whatever production did."""
    ok = candidate.errors == 0
    note = "" if ok else f"{candidate.errors} images raised"
    return GateCheck("errors", float(candidate.errors), None, 0.0, "max", ok, note)


def _golden_check(problems: list[str]) -> GateCheck:
    return GateCheck(
        "golden_images", float(len(problems)), None, 0.0, "max", not problems, "; ".join(problems[:3])
    )


def target_check(card: ModelCard, accepted: str = "") -> GateCheck:
    """The card's achieved escape against its own calibration target; an accepted miss passes, noted.

    A card without a target (an imported model, thresholds set by hand) passes, saying so: its
    escape rate on the line is only what the comparison on the evaluation set shows.
    """
    if card.targets is None or card.achieved is None:
        return GateCheck(
            "escape_target",
            None,
            None,
            None,
            "max",
            True,
            "uncalibrated: the card's thresholds were not tuned for an escape target "
            "(lineguard calibrate --model DIR --data D --write)",
        )
    missed = card.missed_target()
    note = missed or ""
    if missed and accepted.strip():
        note += f"; accepted: {accepted.strip()}"
    achieved = card.achieved.escape_rate
    limit = card.targets.max_escape
    return GateCheck(
        "escape_target", achieved, None, limit, "max", not missed or bool(accepted.strip()), note
    )


def evaluate_variant(
    onnx_path: Path,
    card: ModelCard,
    eval_set: EvalSet,
    name: str,
    *,
    model_cfg: ModelConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
) -> EvalResult:
    """``evaluate_model`` with the station's model section asking for variant ``name``."""
    base = model_cfg or ModelConfig(threads=1)
    as_variant = base.model_copy(update={"precision": name, "confirm_runs": 0})
    return evaluate_model(onnx_path, card, eval_set, model_cfg=as_variant, policy_cfg=policy_cfg)


def variant_checks(
    onnx_path: Path, card: ModelCard, fp32: EvalResult, eval_set: EvalSet, evaluator: VariantEvaluator
) -> dict[str, GateCheck]:
    """Each variant the card certifies, again on the gate's frozen set against fp32 (one rule).

    Keyed by variant name. The checks are informational: a station set to ``precision: auto``
    would run the variant, so one the set does not bear out (or that cannot run here) is
    decertified by ``run_gate`` rather than refusing the fp32 model with it.
    """
    checks: dict[str, GateCheck] = {}
    for variant in card.variants:
        if not variant.certified:
            continue
        metric = f"variant_{variant.name}"
        try:
            result = evaluator(onnx_path, card, eval_set, variant.name)
        except LineguardError as exc:
            checks[variant.name] = GateCheck(
                metric, None, None, None, "min", False, f"cannot run: {exc}", informational=True
            )
            continue
        quality = result.map50 if result.map50 is not None else result.unit_accuracy
        base = fp32.map50 if fp32.map50 is not None else fp32.unit_accuracy
        ok, why = certify_variant(
            Measured(base, fp32.escape_rate, fp32.no_decision_rate),
            Measured(quality, result.escape_rate, result.no_decision_rate),
        )
        note = why if ok else f"not certified: {why}"
        checks[variant.name] = GateCheck(metric, quality, None, None, "min", ok, note, informational=True)
    return checks


def compare(
    candidate: EvalResult,
    production: EvalResult | None,
    margins: GateConfig,
    golden_problems: list[str] | None = None,
) -> list[GateCheck]:
    """The checks for ``candidate`` against ``production`` (None: first model, nothing to beat)."""
    checks: list[GateCheck] = []
    if production is not None:
        if candidate.eval_digest != production.eval_digest:
            raise InputError(
                "candidate and production were evaluated on different sets; the gate needs one frozen set"
            )
        checks.append(_quality_check(candidate, production, margins))
        checks += _rate_checks(candidate, production, margins)
        checks.append(_latency_check(candidate, production, margins))
    checks.append(_errors_check(candidate))
    if golden_problems is not None:
        checks.append(_golden_check(golden_problems))
    return checks


def run_gate(
    registry: Registry,
    name: str,
    version: str,
    eval_set: EvalSet,
    margins: GateConfig,
    *,
    evaluator: Evaluator = evaluate_model,
    golden_dir: Path | None = None,
    golden_runner: GoldenRunner | None = None,
    report_dir: Path | None = None,
    accept_missed_target: str = "",
    variant_evaluator: VariantEvaluator = evaluate_variant,
) -> GateReport:
    """Evaluate ``name:version`` and the current production of ``name``; compare; write the report.

    Besides the comparison, the candidate must meet its own calibration target (card ``targets``
    vs ``achieved``) unless ``accept_missed_target`` gives a reason. Every variant its card
    certifies is held to the certification rule again on the same set (``variant_checks``); one
    that fails is decertified in the registry (``Registry.decertify``, reason ``gate: ...``)
    whether or not the candidate passes, and listed in ``GateReport.decertified``.
    """
    candidate = registry.get(name, version)
    production = registry.production(name)
    if production is not None and production.version == candidate.version:
        raise InputError(f"{candidate.ref} is already production; nothing to gate")
    cand_result = evaluator(registry.artifact(candidate), candidate.card, eval_set)
    prod_result = evaluator(registry.artifact(production), production.card, eval_set) if production else None
    golden = None
    if golden_dir is not None and golden_runner is not None:
        golden = golden_runner(registry.artifact(candidate), candidate.card, golden_dir)
    checks = compare(cand_result, prod_result, margins, golden)
    variants = variant_checks(
        registry.model_dir(name, version) / ONNX_FILE,
        candidate.card,
        cand_result,
        eval_set,
        variant_evaluator,
    )
    checks += variants.values()
    checks.append(target_check(candidate.card, accept_missed_target))
    results = {"candidate": cand_result.to_dict()}
    if prod_result is not None:
        results["production"] = prod_result.to_dict()
    report = GateReport(
        candidate=candidate.ref,
        production=production.ref if production else None,
        eval_set=str(eval_set.root),
        eval_digest=eval_set.digest,
        passed=all(c.passed for c in checks if not c.informational),
        checks=tuple(checks),
        results=results,
        decertified={n: f"{GATE_REASON}{c.note}" for n, c in variants.items() if not c.passed},
    )
    if report_dir is not None:
        registry.attach(candidate, "gate", report.write(report_dir))
    audit = report.audit(report_dir)
    registry.record(name, version, "gate", why=report.summary, detail=audit)
    if report.decertified:
        registry.decertify(
            name,
            version,
            report.decertified,
            why=f"the promotion gate's re-check on eval set {eval_set.digest[:16]}",
            detail={k: v for k, v in audit.items() if k in ("eval_digest", "report")},
        )
    return report


def gate_from_config(
    cfg: LineguardConfig,
    registry: Registry,
    name: str,
    version: str,
    *,
    report_dir: Path,
    eval_set: Path | None = None,
    golden: Path | None = None,
    accept_missed_target: str = "",
) -> GateReport:
    """The gate as a station's config sets it up: eval set, margins, golden images, policy."""
    source = eval_set or cfg.registry.eval_set
    if source is None:
        raise InputError("the promotion gate needs an evaluation set: --eval-set or registry.eval_set")
    # fp32 is what the gate compares; variants are certified against it (variant_checks).
    fp32 = cfg.model.model_copy(update={"precision": "fp32"})
    return run_gate(
        registry,
        name,
        version,
        EvalSet.load(source, cfg.registry.eval_split),
        cfg.registry.gate,
        evaluator=partial(evaluate_model, model_cfg=fp32, policy_cfg=cfg.policy),
        variant_evaluator=partial(evaluate_variant, model_cfg=cfg.model, policy_cfg=cfg.policy),
        golden_dir=golden or cfg.registry.golden_dir,
        golden_runner=partial(golden_problems, model_cfg=fp32),
        report_dir=report_dir,
        accept_missed_target=accept_missed_target,
    )
