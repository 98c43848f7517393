"""Charts for the load test: latency percentiles and requests/s over time from Locust's stats history CSV.

Locust writes ``<prefix>_stats_history.csv`` every second; with ``--csv-full-history`` it has one row per
entry per second, with percentiles over a sliding window (the "current" figures the web UI shows).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadtest.slo import AGGREGATED, NON_HTTP_TYPES

SERVER_TYPE = "server"

PERCENTILES = (("50%", "p50"), ("95%", "p95"), ("99%", "p99"))


def read_history(path: Path, request_type: str | None = None) -> dict[str, list[dict[str, float]]]:
    """Per entry name, its rows in time order: ``t`` (seconds from the first row), ``rps``, ``users``,
    ``p50``, ``p95``, ``p99`` (ms, NaN when no request finished in the window).

    Args:
        path: Locust's ``*_stats_history.csv``.
        request_type: Keep only rows of this type (e.g. ``server``); ``None`` keeps the HTTP rows.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    start = min(int(row["Timestamp"]) for row in rows)
    series: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row in rows:
        if row["Name"] == AGGREGATED:
            continue
        if (row["Type"] != request_type) if request_type else (row["Type"] in NON_HTTP_TYPES):
            continue
        point = {
            "t": float(int(row["Timestamp"]) - start),
            "rps": _float(row["Requests/s"]),
            "users": _float(row["User Count"]),
        }
        for column, key in PERCENTILES:
            value = _float(row.get(column))
            # Locust writes 0 for a window without requests; on a log axis that is a spike to nothing.
            point[key] = value if value > 0 else math.nan
        series[row["Name"]].append(point)
    return dict(series)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def plot_latency(history_csv: Path, out_png: Path, title: str = "Load test") -> Path:
    """Write ``latency.png`` over time: p50/p95/p99 of the classify requests, the server-side split (queue,
    tokenization, inference, from the timing headers) when reported, and HTTP requests/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http = read_history(history_csv)
    server = read_history(history_csv, request_type=SERVER_TYPE)
    # Health and info requests are light and would crowd the chart; they still count in requests/s.
    shown = {name: points for name, points in http.items() if name.startswith("classify")} or http
    panels = 3 if server else 2
    figure, axes = plt.subplots(panels, 1, figsize=(10, 3.2 * panels), sharex=True)
    styles = {"p50": "-", "p95": "--", "p99": ":"}

    def draw(ax: Any, series: dict[str, list[dict[str, float]]], keys: tuple[str, ...]) -> None:
        for index, (name, points) in enumerate(sorted(series.items())):
            times = [p["t"] for p in points]
            for key in keys:
                ax.plot(
                    times, [p[key] for p in points], styles[key], color=f"C{index}", label=f"{name} {key}"
                )
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if series:
            ax.legend(fontsize=7, ncol=2)

    draw(axes[0], shown, ("p50", "p95", "p99"))
    axes[0].set_title(f"{title}: request latency (sliding window)")
    if server:
        draw(axes[1], server, ("p50", "p95"))
        axes[1].set_title(
            "server-side time per request (X-Queue-Time, X-Tokenization-Time, X-Inference-Time)"
        )
    totals: dict[float, float] = defaultdict(float)
    for points in http.values():
        for point in points:
            if not math.isnan(point["rps"]):
                totals[point["t"]] += point["rps"]
    times = sorted(totals)
    axes[-1].plot(times, [totals[t] for t in times], color="black", label="HTTP requests/s (all endpoints)")
    axes[-1].set_ylabel("requests/s")
    axes[-1].set_xlabel("seconds since start")
    axes[-1].grid(True, alpha=0.3)
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)
    return out_png
