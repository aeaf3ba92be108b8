"""The Prometheus alert rules: valid for promtool, unit-tested per alert, on metrics that exist."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from lineguard.monitoring import Metrics, metric_names_in, series_names

RULES_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
RULES = RULES_DIR / "rules.yml"
RULES_TEST = RULES_DIR / "rules_test.yml"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules_accepts_the_rules_file(promtool: Path) -> None:
    done = _promtool(promtool, "check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool: Path) -> None:
    done = _promtool(promtool, "test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert {
        "LineguardDeadlineMisses",
        "LineguardOutboxBacklog",
        "LineguardCameraDown",
        "LineguardDriftAlarm",
        "LineguardEscapeRate",
    } <= alerts
    assert alerts - fired == set()


def test_rule_expressions_name_only_metrics_the_edge_exports() -> None:
    known = series_names(Metrics())
    used = {name for rule in _rules() for name in metric_names_in(rule["expr"])}
    assert used, "no lineguard metric found in the rules"
    assert used - known == set()
