"""The benchmark's bookkeeping: wrk summaries, the engine figure from bench.json, and the target verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench
from loadtest.wrk import parse_summary, write_bodies

pytestmark = pytest.mark.unit


def wrk_raw(requests: int = 1000, status_errors: int = 0, p99_us: int = 40_000) -> dict[str, Any]:
    latency = {"mean": 9000.0, "max": 90_000, "p50": 8000, "p90": 15_000, "p95": 20_000, "p99.9": 60_000}
    return {
        "requests": requests,
        "duration_us": 10_000_000,
        "bytes": 123,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": status_errors, "timeout": 0},
        "latency_us": {**latency, "p99": p99_us},
    }


def test_wrk_summary_counts_only_answered_requests() -> None:
    result = parse_summary(wrk_raw(requests=1000, status_errors=100), connections=8)
    assert result.throughput_rps == pytest.approx(90.0)  # 900 good answers in 10 s
    assert result.latency_ms["p99"] == pytest.approx(40.0)
    assert result.error_count == 100


def test_bodies_file_is_one_json_object_per_line(tmp_path: Path) -> None:
    path = write_bodies([{"text": "line one\nline two"}, {"text": "é"}], tmp_path / "b.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["line one\nline two", "é"]


def test_engine_throughput_reads_the_int8_figures(tmp_path: Path) -> None:
    report = {
        "results": {
            "1": {"onnx_int8": {"texts_per_second": 250.0}, "pytorch_eager_fp32": {"texts_per_second": 70.0}},
            "32": {"onnx_int8": {"texts_per_second": 300.0}},
        }
    }
    (tmp_path / "bench.json").write_text(json.dumps(report))
    engine = bench.engine_throughput(tmp_path)
    assert engine is not None
    assert engine["best"] == 300.0
    assert engine["texts_per_second_by_batch"] == {"1": 250.0, "32": 300.0}
    assert bench.engine_throughput(tmp_path / "missing") is None


def figures(rps: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "throughput_rps": rps,
        "latency_ms": {"p50": p50, "p95": p99, "p99": p99},
        "server_cpu_ms_per_request": 2000 / rps,
    }


def results_for(ours_c32: dict[str, Any], base_c32: dict[str, Any], ours_c1_p50: float) -> dict[str, Any]:
    rows = []
    for concurrency, ours, base in (
        (1, figures(150, ours_c1_p50, 9), figures(60, 15, 30)),
        (32, ours_c32, base_c32),
    ):
        rows.append(
            {"concurrency": concurrency, "ours": ours, "baseline": base, "ratio": bench.compare(ours, base)}
        )
    return {"comparison": rows, "engine_same_run": {"texts_per_second": 300.0}}


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return {t["name"]: t["met"] for t in bench.evaluate_targets(results)}


def test_targets_met() -> None:
    results = results_for(figures(250, 100, 150), figures(50, 600, 900), ours_c1_p50=6)
    assert verdicts(results) == dict.fromkeys(
        ("throughput_ratio_c32", "p99_ratio_c32", "serving_efficiency", "p50_ms_c1"), True
    )


def test_each_missed_target_is_reported() -> None:
    # 3x the baseline, p99 half of it, 200/300 of the engine, 12 ms at c=1: every target missed.
    results = results_for(figures(150, 100, 450), figures(50, 600, 900), ours_c1_p50=12)
    assert not any(verdicts(results).values())


def test_without_engine_report_the_overhead_target_is_missed_not_skipped() -> None:
    results = results_for(figures(250, 100, 150), figures(50, 600, 900), ours_c1_p50=6)
    results["engine_same_run"] = None
    assert verdicts(results)["serving_efficiency"] is False


def test_repeated_rounds_report_medians() -> None:
    measured = [
        {
            **figures(rps, p50, p99),
            "server_cpu_cores": 1.0,
            "loadgen_cpu_cores": 0.1,
            "loadgen_cpu_share": 0.05,
        }
        | {"errors": {"status": errors}}
        for rps, p50, p99, errors in ((100, 10, 50, 0), (300, 30, 20, 1), (200, 20, 40, 2))
    ]
    median = bench.median_figures(measured)
    assert median["throughput_rps"] == 200
    assert median["latency_ms"] == {"p50": 20, "p95": 40, "p99": 40}
    assert median["errors"] == {"status": 3}
    assert median["runs"] == 3
    assert median["server_cpu_ms_per_request"] == pytest.approx(2000 / 200)
    # The medians feed the ours/baseline comparison like a single measurement does.
    assert bench.compare(median, figures(50, 40, 80))["throughput"] == pytest.approx(4.0)
