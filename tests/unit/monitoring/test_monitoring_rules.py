"""Prometheus configuration checked like code: promtool's config and rule checks, the rule unit tests, and the
generated rule files matching their generator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.prometheus import generate

PROM_DIR = Path(generate.__file__).resolve().parent
CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed (it comes with Debian's `prometheus` package): run `make system-deps`"
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict]:
    groups = yaml.safe_load((PROM_DIR / "rules" / generate.ALERTS_FILE).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config loads the rule files through its relative glob (the same path inside the compose container).
    assert "2 rule files found" in result.stdout


def test_promtool_check_rules(promtool: str) -> None:
    assert RULE_FILES, "no rule files"
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    assert TEST_FILES, "no promtool test files"
    result = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_rules_match_the_generator() -> None:
    for name, content in generate.render_all().items():
        committed = (PROM_DIR / "rules" / name).read_text(encoding="utf-8")
        assert committed == content, f"rules/{name} is stale: run `python -m monitoring.prometheus.generate`"


def test_config_scrapes_the_textclf_job_every_5s() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"textclf", "prometheus"}
    interval = jobs["textclf"].get("scrape_interval", config["global"]["scrape_interval"])
    assert interval == "5s"
    assert jobs["textclf"]["static_configs"] == [{"targets": ["api:8000"]}]
    assert config["rule_files"] == ["rules/*.yml"]


def test_every_alert_has_for_severity_and_a_description() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert set(names) >= {
        "ServiceDown",
        "HighErrorRatio",
        "HighLatencyP99",
        "QueueSaturation",
        "RejectionsHigh",
        "PredictionDrift",
        "LowConfidence",
        "ErrorBudgetBurnFast",
        "ErrorBudgetBurnSlow",
    }
    for rule in alerts():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they stay quiet"


def test_thresholds_are_configurable(tmp_path: Path, promtool: str) -> None:
    generate.main(["--out", str(tmp_path), "--latency-p99-slo-seconds", "0.25", "--drift-tolerance", "0.05"])
    rendered = (tmp_path / generate.ALERTS_FILE).read_text()
    assert "job:textclf_request_duration_seconds:p99_rate5m > 0.25" in rendered
    assert ") > 0.05\n" in rendered
    assert "5 percentage points" in rendered
    result = run(promtool, "check", "rules", *(str(p) for p in sorted(tmp_path.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr
