"""The monitoring configuration proven on live data.

Starts the service on the tiny bundle and Debian's Prometheus with the project's prometheus.yml and rules
(target pointed at the test service, 1 s scrape and rule evaluation), drives traffic including bad requests,
then evaluates through Prometheus' HTTP API, like Grafana and the rule engine would:

- every recording rule: must have produced finite values;
- every dashboard panel query, with the template variables substituted as Grafana does: must return data;
- the dashboard's variable query: must list the service's instance;
- every alert expression: must evaluate; those that must stay quiet on healthy traffic are listed with why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.prometheus import RunningPrometheus, run_prometheus
from monitoring.grafana import generate as dashboard_generate
from monitoring.grafana import queries
from monitoring.prometheus import generate as rules_generate
from tests.support.server import ServiceProcess, run_service

pytestmark = pytest.mark.slow

SCRAPE_SECONDS = 1
TRAFFIC_SECONDS = 6.0

# Alert expressions that must return nothing on this healthy run (4xx only, no 5xx, light sequential load).
QUIET_ALERTS = {
    "ServiceDown": "the service is up and scraped",
    "HighErrorRatio": "the traffic has 4xx but no 5xx",
    "HighLatencyP99": "the tiny model answers in milliseconds, far below the 1 s objective",
    "QueueSaturation": "one sequential client: the queue never holds more than a request or two",
    "RejectionsHigh": "nothing is refused: the queue never fills and the service stays ready",
    "ErrorBudgetBurnFast": "no 5xx",
    "ErrorBudgetBurnSlow": "no 5xx",
}
# Alert expressions whose result depends on the random tiny model: only checked to evaluate. Their inputs
# (label shares, mean score, priors) are recording rules and panels, which must return data.
UNDETERMINED_ALERTS = {
    "PredictionDrift": "label shares of a random tiny model against its synthetic prior",
    "LowConfidence": "a random tiny model's top scores sit near 0.5, around the 0.6 threshold",
}
# Dashboard queries allowed to return nothing, (panel title, refId) -> reason. Every panel shows data on this
# traffic, so there are none.
EMPTY_PANEL_QUERIES: dict[tuple[str, str], str] = {}

GOOD_TEXTS = [
    "We need water and tents, the river flooded our village",
    "Earthquake destroyed the school, children trapped, send rescue",
    "Nice coffee with friends this morning",
    "Storm damage on the road to the hospital, please help",
]
LONG_TEXT = " ".join(["flood damage destroyed the bridge and many houses in the village"] * 20)


def drive_traffic(base_url: str, seconds: float) -> int:
    """Good requests (single, batch, over-long) and bad ones (4xx) for ``seconds``; returns texts
    classified."""
    texts = 0
    statuses: set[int] = set()
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while time.monotonic() < deadline:
            for payload in ({"text": GOOD_TEXTS[texts % 4]}, {"texts": GOOD_TEXTS * 2}, {"text": LONG_TEXT}):
                response = client.post("/classify", json=payload)
                assert response.status_code == 200, response.text
                texts += len(payload.get("texts", [None]))
            for bad in (
                client.post("/classify", content=b"{not json", headers={"content-type": "application/json"}),
                client.post("/classify", json={"text": "   "}),
                client.post("/classify", json={"text": "hi", "unknown": 1}),
                client.post("/classify", json={"texts": ["x"] * 1000}),
                client.post("/classify", json={"text": LONG_TEXT, "truncate": False}),
                client.get("/classify"),
                client.get("/no/such/path"),
            ):
                assert 400 <= bad.status_code < 500, bad.text
                statuses.add(bad.status_code)
            assert client.get("/info").status_code == 200
            time.sleep(0.02)
    assert 400 in statuses, statuses
    return texts


def api(prom: RunningPrometheus, path: str, **params: Any) -> Any:
    response = httpx.get(f"{prom.url}/api/v1/{path}", params=params, timeout=30)
    body = response.json()
    assert response.status_code == 200, f"{path} {params}: {body}"
    assert body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


def finite_points(data: dict[str, Any]) -> int:
    """Finite values in a query result (matrix or vector); NaN (e.g. 0/0) is not data."""
    if data["resultType"] == "matrix":
        values = [float(v) for series in data["result"] for _, v in series["values"]]
    else:
        values = [float(series["value"][1]) for series in data["result"]]
    return sum(math.isfinite(v) for v in values)


def wait_for(condition: Any, timeout: float, what: str, prom: RunningPrometheus) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; prometheus log:\n{prom.logs()[-3000:]}")
        time.sleep(0.25)


def scalar(prom: RunningPrometheus, expr: str) -> float | None:
    result = api(prom, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def live(tiny_bundle_dir: Path) -> Iterator[tuple[ServiceProcess, RunningPrometheus, float, float]]:
    """Service + Prometheus after a burst of traffic: (service, prometheus, window start, window end)."""
    with run_service(tiny_bundle_dir, max_batch_size=8, workers=1) as service:
        target = service.metrics_url.removeprefix("http://").removesuffix("/metrics")
        with run_prometheus(target, scrape_interval=f"{SCRAPE_SECONDS}s") as prom:
            # Prometheus applies new targets after a ~5 s discovery delay; start once the service is scraped.
            wait_for(lambda: scalar(prom, 'up{job="textclf"}') == 1, 30, "the first scrape", prom)
            start = time.time() - 1
            texts = drive_traffic(service.base_url, TRAFFIC_SECONDS)
            wait_for(
                lambda: (scalar(prom, 'sum(textclf_texts_total{job="textclf"})') or 0) >= texts,
                15,
                f"a scrape counting all {texts} texts",
                prom,
            )
            time.sleep(3 * SCRAPE_SECONDS)  # two more rule evaluations on the final counters
            yield service, prom, start, time.time()


def test_every_recording_rule_returns_data(
    live: tuple[ServiceProcess, RunningPrometheus, float, float],
) -> None:
    _, prom, start, end = live
    groups = yaml.safe_load((rules_generate.RULES_DIR / rules_generate.RECORDING_FILE).read_text())["groups"]
    names = [rule["record"] for group in groups for rule in group["rules"]]
    assert len(names) > 20
    empty = [
        name
        for name in names
        if not finite_points(api(prom, "query_range", query=name, start=start, end=end, step=SCRAPE_SECONDS))
    ]
    assert empty == [], f"recording rules without data: {empty}"


def test_every_dashboard_query_returns_data(
    live: tuple[ServiceProcess, RunningPrometheus, float, float],
) -> None:
    _, prom, start, end = live
    dashboard = queries.load(dashboard_generate.DASHBOARD_FILE)
    # What Grafana sends for this time range, with the datasource's scrape interval set to the test's.
    values = {**queries.intervals(end - start, SCRAPE_SECONDS), **queries.default_variables(dashboard)}
    step = float(values["__interval_ms"]) / 1000
    panel_queries = queries.panel_queries(dashboard)
    assert len(panel_queries) > 30
    empty = []
    for query in panel_queries:
        expr = queries.substitute(query.expr, values)
        assert "$" not in expr, expr
        assert "[[" not in expr, expr
        data = api(prom, "query_range", query=expr, start=start, end=end, step=step)
        if not finite_points(data) and (query.panel, query.ref_id) not in EMPTY_PANEL_QUERIES:
            empty.append(f"{query.panel} [{query.ref_id}]: {expr}")
    assert empty == [], "panel queries without data:\n" + "\n".join(empty)


def test_dashboard_instance_variable_lists_the_service(
    live: tuple[ServiceProcess, RunningPrometheus, float, float],
) -> None:
    service, prom, start, end = live
    dashboard = queries.load(dashboard_generate.DASHBOARD_FILE)
    definition = queries.substitute(
        queries.variable_queries(dashboard)["instance"], queries.default_variables(dashboard)
    )
    selector = definition.removeprefix("label_values(").removesuffix(", instance)")
    series = api(prom, "series", **{"match[]": selector, "start": start, "end": end})
    target = service.metrics_url.removeprefix("http://").removesuffix("/metrics")
    assert {item["instance"] for item in series} == {target}


def test_alert_expressions_evaluate_and_stay_quiet_when_healthy(
    live: tuple[ServiceProcess, RunningPrometheus, float, float],
) -> None:
    _, prom, _, end = live
    groups = yaml.safe_load((rules_generate.RULES_DIR / rules_generate.ALERTS_FILE).read_text())["groups"]
    alerts = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    assert set(alerts) == set(QUIET_ALERTS) | set(UNDETERMINED_ALERTS)
    firing = {}
    for name, expr in alerts.items():
        result = api(prom, "query", query=expr, time=end)["result"]
        if name in QUIET_ALERTS and result:
            firing[name] = result
    assert firing == {}, f"alerts that should be quiet on healthy traffic: {firing}"
    # The rule engine loaded every rule from the project's files and evaluates them without error.
    rule_groups = api(prom, "rules")["groups"]
    loaded = [rule for group in rule_groups for rule in group["rules"]]
    assert {rule["name"] for rule in loaded if rule["type"] == "alerting"} == set(alerts)
    assert all(rule["health"] == "ok" for rule in loaded), [r for r in loaded if r["health"] != "ok"]
