"""The Grafana dashboard and provisioning: generated file up to date, fixed uids, read-only provider, every
panel query parses, and every metric of the contract is on the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.grafana import generate, queries

GRAFANA_DIR = Path(generate.__file__).resolve().parent
REPO_ROOT = GRAFANA_DIR.parents[1]
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "textclf.yml"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return queries.load(generate.DASHBOARD_FILE)


def test_committed_dashboard_matches_the_generator() -> None:
    committed = generate.DASHBOARD_FILE.read_text(encoding="utf-8")
    assert committed == generate.render(), "dashboard is stale: run `python -m monitoring.grafana.generate`"
    assert committed == json.dumps(json.loads(committed), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_datasource_is_provisioned_with_the_uid_every_panel_uses(dashboard: dict) -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["uid"] == generate.DATASOURCE.uid
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    used = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        used.add(panel["datasource"]["uid"])
        used.update(target["datasource"]["uid"] for target in panel["targets"])
    assert used == {source["uid"]}


def test_dashboard_provider_is_read_only_and_loads_the_mounted_folder() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["allowUiUpdates"] is False
    assert provider["disableDeletion"] is True
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    # docker compose mounts monitoring/grafana/dashboards exactly there.
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in mounts


def test_dashboard_has_a_fixed_uid_and_unique_panel_ids(dashboard: dict) -> None:
    assert dashboard["uid"] == "textclf-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # The builder lays panels out left to right and wraps only after a line is full: none may stick out.
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])
    assert dashboard["editable"] is False


def test_every_contract_metric_is_on_the_dashboard(dashboard: dict) -> None:
    contracts = (REPO_ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    section = contracts.split("## 6. Metrics", 1)[1]
    metrics = set(re.findall(r"^\| `(textclf_\w+)`", section, flags=re.M))
    assert len(metrics) >= 19
    exprs = " ".join(query.expr for query in queries.panel_queries(dashboard))
    missing = {metric for metric in metrics if metric not in exprs}
    assert missing == set()
    assert "process_cpu_seconds_total" in exprs
    assert "process_resident_memory_bytes" in exprs


def test_the_issue_panels_are_there(dashboard: dict) -> None:
    titles = {panel["title"] for panel in dashboard["panels"]}
    for title in (
        "Model",
        "Requests by status",
        "Error and rejection ratios",
        "Request latency (end to end)",
        "Tokenization time",
        "Queue time",
        "Inference time (per batch)",
        "Batch size",
        "Batch tokens (padded)",
        "Queue depth and in-flight",
        "Predictions by label vs training prior",
        "Prediction score distribution",
        "Input length (tokens)",
        "Truncation rate",
        "CPU",
        "Memory",
    ):
        assert title in titles
    latency = [q for q in queries.panel_queries(dashboard) if q.panel == "Request latency (end to end)"]
    assert [q.legend for q in latency] == ["p50", "p95", "p99"]


def test_grafana_variable_substitution() -> None:
    values = {**queries.intervals(600, 5), "job": "textclf", "instance": ".*"}
    # 600 s / 1000 points = 0.6 s, below the 5 s scrape interval: $__interval is 5s, $__rate_interval 20s.
    assert values["__interval"] == "5s"
    assert values["__rate_interval"] == "20s"
    assert values["__range"] == "600s"
    expr = 'rate(x{job="$job", instance=~"${instance}"}[$__rate_interval]) + y[[job]][$__range]'
    assert queries.substitute(expr, values) == 'rate(x{job="textclf", instance=~".*"}[20s]) + ytextclf[600s]'
    # A day at 1000 points: 86.4 s rounds to 1m, and rate needs interval + scrape.
    assert queries.intervals(86400, 15)["__rate_interval"] == "75s"
    with pytest.raises(KeyError):
        queries.substitute("up{job=~'$unknown'}", values)


def test_default_variables_follow_the_dashboard(dashboard: dict) -> None:
    assert queries.default_variables(dashboard) == {"job": "textclf", "instance": ".*"}


def test_every_panel_query_parses(dashboard: dict, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian's `prometheus` package): run `make system-deps`")
    values = {**queries.intervals(3600, 5), **queries.default_variables(dashboard)}
    exprs = [queries.substitute(q.expr, values) for q in queries.panel_queries(dashboard)]
    exprs += [
        # label_values(metric, label) is Grafana's, not PromQL: check its metric selector.
        re.sub(r"^label_values\((.*), \w+\)$", r"\1", queries.substitute(definition, values))
        for definition in queries.variable_queries(dashboard).values()
    ]
    assert len(exprs) > 30
    # promtool has no "check expression"; a rule file with one recording rule per query makes it parse them.
    rules = {
        "groups": [{"name": "panels", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
