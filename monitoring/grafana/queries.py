"""Read the PromQL out of a dashboard JSON and substitute template variables the way Grafana does.

The tests use this to check every panel query: offline (does it parse?) and against a live Prometheus (does it
return data?). Grafana's rules (Prometheus datasource):

- ``$__interval``: the time range divided by the panel's max data points, rounded to a "nice" step, and never
  below the datasource's scrape interval (``timeInterval``).
- ``$__rate_interval``: ``max($__interval + scrape interval, 4 x scrape interval)``, so ``rate()`` always
  sees at least four samples.
- ``$__range``: the time range in whole seconds (``3600s``).
- Dashboard variables: ``$name``, ``${name}`` and ``[[name]]``; a multi-value variable set to All becomes its
  ``allValue`` (``.*`` here).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Grafana's rangeutil.roundInterval: (upper bound in seconds, rounded interval in seconds).
_ROUNDING = (
    (0.015, 0.01),
    (0.035, 0.02),
    (0.075, 0.05),
    (0.15, 0.1),
    (0.35, 0.2),
    (0.75, 0.5),
    (1.5, 1),
    (3.5, 2),
    (7.5, 5),
    (12.5, 10),
    (17.5, 15),
    (25, 20),
    (45, 30),
    (90, 60),
    (210, 120),
    (450, 300),
    (750, 600),
    (1050, 900),
    (1500, 1200),
    (2700, 1800),
    (5400, 3600),
    (9000, 7200),
    (16200, 10800),
    (32400, 21600),
    (86400, 43200),
)


@dataclass(frozen=True)
class Query:
    """One panel target."""

    panel: str
    ref_id: str
    expr: str
    legend: str


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every target of every panel (rows included, collapsed or not)."""
    queries: list[Query] = []

    def visit(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            visit(panel.get("panels", []))
            for target in panel.get("targets", []):
                queries.append(
                    Query(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
                )

    visit(dashboard["panels"])
    return queries


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Query variables: name -> their ``label_values(...)`` query (Prometheus' variable editor stores it as
    ``{"query": ..., "refId": ...}``; older dashboards hold the bare string)."""
    found: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found[variable["name"]] = query["query"] if isinstance(query, dict) else query
    return found


def default_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each dashboard variable's value as the dashboard opens: custom variables their current value,
    multi-value variables set to All their ``allValue``."""
    values: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        current = variable.get("current", {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else "|".join(current)
        if current == "$__all":
            current = variable.get("allValue") or ".*"
        values[variable["name"]] = str(current)
    return values


def round_interval(seconds: float) -> float:
    for bound, rounded in _ROUNDING:
        if seconds < bound:
            return rounded
    return 86400.0


def format_duration(seconds: float) -> str:
    """A PromQL duration the way Grafana writes intervals (``250ms``, ``4s``, ``2m``)."""
    if seconds < 1 or not float(seconds).is_integer():
        return f"{round(seconds * 1000)}ms"
    seconds = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def intervals(
    range_seconds: float, scrape_interval_seconds: float, max_data_points: int = 1000
) -> dict[str, str]:
    """Grafana's built-in interval variables for a time range."""
    interval = max(round_interval(range_seconds / max_data_points), scrape_interval_seconds)
    rate_interval = max(interval + scrape_interval_seconds, 4 * scrape_interval_seconds)
    return {
        "__interval": format_duration(interval),
        "__interval_ms": str(round(interval * 1000)),
        "__rate_interval": format_duration(rate_interval),
        "__range": f"{math.floor(range_seconds)}s",
        "__range_s": str(math.floor(range_seconds)),
        "__range_ms": str(math.floor(range_seconds * 1000)),
    }


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``[[name]]`` by ``values[name]``.

    Raises:
        KeyError: the expression uses a variable that ``values`` does not define.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values[name]

    # Longest names first is implicit: \w+ is greedy, so $__range_s is not read as $__range + "_s".
    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)
