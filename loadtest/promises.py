"""The soak (promise 5) and the overload run (promise 2) of docs/reliability.md, and their verdicts.

``soak``: warm-up, saturation measured with a closed loop, then an open loop at a share of it for a long time,
split into windows, while the server's RSS is sampled; ``evaluate`` gives the verdicts (0 errors, RSS growth
under 10%, p99 drift under 20%). ``overload``: the same at a multiple of saturation, with its own verdicts.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loadtest.loadgen import (
    CONNECTION_ERROR,
    SATURATION_CONCURRENCY,
    LoadRun,
    Sample,
    closed_loop,
    normal_latency_bound,
    open_loop,
    percentile,
    probe_latencies,
    recovery_seconds,
    summarize,
)
from loadtest.memory import RssSampler

# Promise 5 (docs/reliability.md).
MAX_RSS_GROWTH = 0.10
MAX_P99_DRIFT = 0.20


@dataclass
class Window:
    index: int
    summary: dict[str, Any]
    rss_bytes_end: int
    rss_bytes_peak: int


def split_windows(samples: Sequence[Sample], window_s: float, count: int) -> list[list[Sample]]:
    """Samples grouped by the window their send time falls in."""
    windows: list[list[Sample]] = [[] for _ in range(count)]
    for sample in samples:
        index = min(count - 1, int(sample.sent_at // window_s))
        windows[index].append(sample)
    return windows


async def soak(
    url: str,
    pid: int,
    bodies: Sequence[bytes],
    *,
    duration_s: float,
    fraction: float,
    window_s: float,
    saturation_s: float,
    saturation_concurrency: int,
    warmup_s: float,
    log: Callable[[str], object] = print,
) -> tuple[dict[str, Any], LoadRun, list[Window], RssSampler]:
    classify = url.rstrip("/") + "/classify"
    log(f"warm-up: {warmup_s:.0f} s closed loop at c={saturation_concurrency}")
    await closed_loop(classify, bodies, saturation_concurrency, warmup_s)
    log(f"saturation: {saturation_s:.0f} s closed loop at c={saturation_concurrency}")
    saturation_run = await closed_loop(classify, bodies, saturation_concurrency, saturation_s)
    saturation = saturation_run.summary()
    rate = saturation["ok_rate"] * fraction
    log(
        f"  saturation {saturation['ok_rate']:.1f} req/s (p99 {saturation['latency_ms']['p99']:.1f} ms); "
        f"soak at {fraction:.2f} x = {rate:.1f} req/s for {duration_s:.0f} s"
    )
    sampler = RssSampler(pid)
    sampler.start()
    windows_count = max(1, math.ceil(duration_s / window_s))
    window_marks: list[tuple[int, float, int]] = []

    def on_window(index: int) -> None:
        rss = sampler.now()
        window_marks.append((index, time.monotonic(), rss))
        log(f"  window {index + 1}/{windows_count} sent; RSS {rss / 2**20:.1f} MiB")

    run = await open_loop(classify, bodies, rate, duration_s, on_window=on_window, window_s=window_s)
    await sampler.stop()
    windows: list[Window] = []
    marks = {index: (at, rss) for index, at, rss in window_marks}
    grouped = split_windows(run.samples, window_s, windows_count)
    run_start = run.stopped_at - run.duration_s
    for index, samples in enumerate(grouped):
        end_at, end_rss = marks.get(index, (time.monotonic(), sampler.now()))
        begin_at = run_start + index * window_s
        peak = max((rss for at, rss in sampler.samples if begin_at <= at <= end_at), default=end_rss)
        window = Window(index, summarize(samples, min(window_s, duration_s)), end_rss, peak)
        windows.append(window)
        log(
            f"  window {index + 1}/{windows_count}: {window.summary['ok_rate']:.1f} ok/s, "
            f"p99 {window.summary['latency_ms']['p99']:.1f} ms, statuses {window.summary['statuses']}, "
            f"RSS {end_rss / 2**20:.1f} MiB (peak {peak / 2**20:.1f})"
        )
    return saturation, run, windows, sampler


def evaluate(windows: Sequence[Window], run: LoadRun) -> tuple[dict[str, bool], dict[str, float], int]:
    """The promise-5 verdicts and the figures behind them."""
    errors = sum(1 for s in run.samples if s.status != 200) + run.client_skipped
    first, last = windows[0], windows[-1]
    rss_warm = first.rss_bytes_end
    rss_last = last.rss_bytes_peak
    growth = rss_last / rss_warm - 1 if rss_warm else math.nan
    p99_first = float(first.summary["latency_ms"]["p99"])
    p99_last = float(last.summary["latency_ms"]["p99"])
    drift = p99_last / p99_first - 1 if p99_first else math.nan
    verdicts = {
        "zero_errors": errors == 0,
        "rss_growth_under_10pct": growth < MAX_RSS_GROWTH,
        "p99_drift_under_20pct": drift < MAX_P99_DRIFT,
    }
    figures = {
        "rss_warm_bytes": rss_warm,
        "rss_peak_last_bytes": rss_last,
        "rss_growth": growth,
        "p99_first_ms": p99_first,
        "p99_last_ms": p99_last,
        "p99_drift": drift,
    }
    return verdicts, figures, errors


# Overload (promise 2) -----------------------------------------------------------------------------------

MAX_RSS_OVER_WARM = 0.20
MAX_RECOVERY_S = 5.0
OVERLOAD_STATUSES = frozenset({200, 429, 503})
# The client must really offer (close to) the asked load, or the run proves nothing.
MIN_OFFERED_SHARE = 0.9


async def overload(
    url: str,
    pid: int,
    bodies: Sequence[bytes],
    *,
    duration_s: float,
    deadline_s: float,
    factor: float = 2.0,
    saturation_s: float = 10.0,
    saturation_concurrency: int = SATURATION_CONCURRENCY,
    warmup_s: float = 5.0,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Promise 2: ``factor`` x saturation for ``duration_s`` seconds, open loop. Returns figures and verdicts:
    only 200/429/503, no dropped connection, p99 of the 200s within ``deadline_s``, RSS within 20% of its
    warm size, latency back to normal within 5 s of the load stopping."""
    classify = url.rstrip("/") + "/classify"
    probe_body = bodies[0]
    log(f"warm-up: {warmup_s:.0f} s closed loop at c={saturation_concurrency}")
    await closed_loop(classify, bodies, saturation_concurrency, warmup_s)
    baseline = await probe_latencies(classify, probe_body, 30)
    bound = normal_latency_bound(baseline)
    saturation = (await closed_loop(classify, bodies, saturation_concurrency, saturation_s)).summary()
    rate = saturation["ok_rate"] * factor
    sampler = RssSampler(pid)
    rss_warm = sampler.now()
    log(
        f"  idle p95 {percentile(baseline, 95) * 1000:.1f} ms (normal <= {bound * 1000:.1f} ms); saturation "
        f"{saturation['ok_rate']:.1f} req/s; overload at {factor:.1f} x = {rate:.1f} req/s for "
        f"{duration_s:.0f} s; warm RSS {rss_warm / 2**20:.1f} MiB"
    )
    sampler.start()
    run = await open_loop(classify, bodies, rate, duration_s)
    await sampler.stop()
    recovery = await recovery_seconds(classify, probe_body, bound, since=run.stopped_at)
    summary = run.summary()
    statuses = run.statuses()
    admitted = [s.latency_s for s in run.samples if s.status == 200]
    refused = statuses.get(429, 0) + statuses.get(503, 0)
    rss_peak = sampler.peak()
    achieved = (run.offered - run.client_skipped) / run.duration_s if run.duration_s else 0.0
    p99 = percentile(admitted, 99)
    verdicts = {
        "overload_reached": achieved >= MIN_OFFERED_SHARE * rate and refused > 0,
        "only_200_429_503": set(statuses) <= OVERLOAD_STATUSES,
        "no_dropped_connections": statuses.get(CONNECTION_ERROR, 0) == 0 and run.client_skipped == 0,
        "p99_admitted_within_deadline": bool(admitted) and p99 <= deadline_s,
        "rss_within_20pct_of_warm": rss_peak <= rss_warm * (1 + MAX_RSS_OVER_WARM),
        "recovered_within_5s": recovery <= MAX_RECOVERY_S,
    }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": run.duration_s,
        "factor": factor,
        "saturation_rps": saturation["ok_rate"],
        "offered_rps": rate,
        "sent_rps": achieved,
        "run": summary,
        "p99_admitted_ms": p99 * 1000,
        "deadline_s": deadline_s,
        "rss_warm_bytes": rss_warm,
        "rss_peak_bytes": rss_peak,
        "rss_peak_over_warm": rss_peak / rss_warm - 1 if rss_warm else math.nan,
        "idle_p95_ms": percentile(baseline, 95) * 1000,
        "normal_bound_ms": bound * 1000,
        "recovery_s": recovery,
        "verdicts": verdicts,
        "machine": machine(),
    }
    log(
        f"  sent {achieved:.1f} req/s; statuses {summary['statuses']}; connection errors "
        f"{summary['connection_errors']}; p99 of 200s {p99 * 1000:.0f} ms (deadline {deadline_s:.0f} s); "
        f"RSS peak {rss_peak / 2**20:.1f} MiB ({result['rss_peak_over_warm'] * 100:+.1f}% over warm); "
        f"back to normal {recovery:.2f} s after the load stopped\n  verdicts: {verdicts}"
    )
    return result


def machine() -> dict[str, Any]:
    return {
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1m_at_end": os.getloadavg()[0],
        "python": sys.version.split()[0],
    }
