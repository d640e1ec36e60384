"""The Prometheus rules in deploy/prometheus/rules: promtool's unit tests pass, cover every
alert firing and silent, and fail when a rule is broken; the static rule checks hold.

promtool comes from Debian's prometheus package (scripts/install_prometheus.sh, run by
`make test`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_deploy import check_deploy, rules

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: run scripts/install_prometheus.sh (make test does)"
    return found


def run_unit_tests(root: Path) -> subprocess.CompletedProcess[str]:
    tests = sorted((root / "tests").glob("*.yml"))
    return subprocess.run(
        [promtool(), "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS
    done = run_unit_tests(PROM)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_fires_in_a_scenario_and_stays_silent_in_another() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test") or []:
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = set(alert_rules())
    assert alerts - fired == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


# (what breaks, file, old, new, alert whose test must now fail)
BROKEN = {
    "calibrated threshold raised": (
        "thresholds.yml",
        "calibrated_spearman_abs\n        expr: vector(0.1)",
        "calibrated_spearman_abs\n        expr: vector(0.5)",
        "RewardcalCalibrationCannotFollow",
    ),
    "raw rise threshold lowered to noise": (
        "thresholds.yml",
        "raw_spearman_rise\n        expr: vector(0.15)",
        "raw_spearman_rise\n        expr: vector(0.01)",
        "RewardcalLengthPays",
    ),
    "alert without its for": (
        "alerts.yml",
        "        for: 15m\n",
        "        for: 0m\n",
        "RewardcalCalibrationCannotFollow",
    ),
    "ops routes counted as API traffic": (
        "recording.yml",
        'rate(rewardcal_request_duration_seconds_bucket{route!~"/metrics|/health|/ready"}[5m])',
        "rate(rewardcal_request_duration_seconds_bucket[5m])",
        "RewardcalHighLatency",
    ),
    "group limit ratio out of step": (
        "thresholds.yml",
        "groups_used_ratio\n        expr: vector(0.8)",
        "groups_used_ratio\n        expr: vector(0.9)",
        "RewardcalCalibrationGroupsNearLimit",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unit_tests_fail_on_a_broken_rule(case: str, tmp_path: Path) -> None:
    name, old, new, alert = BROKEN[case]
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    path = copy / "rules" / name
    text = path.read_text()
    assert old in text, f"the test's anchor is gone from {name}: {old!r}"
    path.write_text(text.replace(old, new, 1))
    done = run_unit_tests(copy)
    assert done.returncode != 0
    assert f"alertname: {alert}," in done.stdout + done.stderr, done.stdout + done.stderr


def test_rule_checks_pass_on_the_real_files() -> None:
    files = rules.DeployFiles.load(ROOT)
    assert rules.check_rules(files, rules.metric_catalog()) == []
    assert rules.check_prometheus(files) == []


RULE_BROKEN = {
    "unknown metric": (
        "rules_texts",
        "rewardcal_response_chars_count[5m]",
        "rewardcal_response_length_count[5m]",
        "rewardcal_response_length_count is neither a metric of service/metrics.py",
    ),
    "runbook names no real setting": (
        "rules_texts",
        "REWARDCAL_CALIBRATION_REFIT_INTERVAL_S, default",
        "REWARDCAL_REFIT_SECONDS, default",
        "runbook names REWARDCAL_REFIT_SECONDS: not a setting",
    ),
    "alert without runbook": (
        "rules_texts",
        "          runbook: >-\n            The process is down",
        "          note: >-\n            The process is down",
        "RewardcalDown: no runbook annotation",
    ),
    "rules not mounted": (
        "compose_text",
        "        target: /etc/prometheus/rules\n",
        "        target: /etc/prometheus/rule.d\n",
        "rule_files 'rules/*.yml': services.prometheus mounts no rule file",
    ),
    "rules not loaded": (
        "prometheus_text",
        "rule_files:\n  - rules/*.yml\n",
        "",
        "no rule_files: the rules in deploy/prometheus/rules are not loaded",
    ),
}


@pytest.mark.parametrize("case", sorted(RULE_BROKEN))
def test_rule_checks_refuse_broken_files(case: str) -> None:
    files = rules.DeployFiles.load(ROOT)
    attribute, old, new, expected = RULE_BROKEN[case]
    value = getattr(files, attribute)
    if isinstance(value, dict):
        hits = [k for k, text in value.items() if old in text]
        assert hits, f"the test's anchor is gone: {old!r}"
        changed = {**value, hits[0]: value[hits[0]].replace(old, new, 1)}
    else:
        assert old in value, f"the test's anchor is gone: {old!r}"
        changed = value.replace(old, new, 1)
    broken = files.replace(**{attribute: changed})
    problems = rules.check_rules(broken, rules.metric_catalog()) + rules.check_prometheus(broken)
    assert any(expected in p for p in problems), problems


def test_promtool_check_config_loads_the_rules() -> None:
    problems = check_deploy.run_promtool_config(promtool(), PROM / "prometheus.yml")
    assert problems == []
    done = subprocess.run(
        [promtool(), "check", "config", str(PROM / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    for rule_file in sorted((PROM / "rules").glob("*.yml")):
        assert f"Checking {PROM / 'rules' / rule_file.name}" in done.stdout, done.stdout
