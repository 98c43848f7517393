"""latency.png is drawn from Locust's full stats history, HTTP and server timing rows apart."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from loadtest import plots

HEADER = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%", "99%"]


def write_history(path: Path) -> Path:
    rows = []
    for second in range(5):
        ts = 1_700_000_000 + second
        rows += [
            [ts, 4, "POST", "classify single", 50.0, 0, 20 if second else "N/A", 40, 60],
            [ts, 4, "GET", "/info", 5.0, 0, 2, 3, 4],
            [ts, 4, "server", "queue", 50.0, 0, 3, 6, 9],
            [ts, 4, "", "Aggregated", 105.0, 0, 10, 30, 50],
        ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def test_history_splits_http_and_server_rows(tmp_path: Path) -> None:
    path = write_history(tmp_path / "h.csv")
    http = plots.read_history(path)
    assert sorted(http) == ["/info", "classify single"]
    single = http["classify single"]
    assert [p["t"] for p in single] == [0, 1, 2, 3, 4]
    assert math.isnan(single[0]["p50"])  # an empty window is a gap, not 0 ms
    assert single[1]["p99"] == 60
    assert sorted(plots.read_history(path, request_type="server")) == ["queue"]


def test_latency_png_is_written(tmp_path: Path) -> None:
    out = plots.plot_latency(write_history(tmp_path / "h.csv"), tmp_path / "out" / "latency.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
