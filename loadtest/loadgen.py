"""Load generators for the soak and overload runs (``loadtest.soak``, ``tests/integration/test_overload.py``).

``closed_loop`` measures saturation: workers that each send the next request when the previous one is
answered. ``open_loop`` offers a fixed arrival rate whatever the answers take. ``probe_latencies`` and
``recovery_seconds`` time single requests, idle and after a load. Every request becomes a ``Sample``; a
request that got no HTTP answer is recorded with status ``CONNECTION_ERROR``, never dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.client import ClientError, HttpClient, new_client

# A closed loop this wide keeps the batcher's batches full without reaching the admission limit (256).
SATURATION_CONCURRENCY = 64
# Most requests the open loop keeps in flight; over the service's default queue (256) so the service, not the
# client, decides what is admitted. Arrivals beyond it are counted as ``client_skipped``, never silently lost.
MAX_OUTSTANDING = 1024
CONNECTION_ERROR = 0
"""Status recorded for a request that got no HTTP answer (refused, reset, timed out)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was sent (seconds since the run started), how long it took, what came back."""

    sent_at: float
    latency_s: float
    status: int
    """HTTP status, or ``CONNECTION_ERROR`` (0) when no answer arrived."""
    error: str | None = None
    """The client exception's type name when ``status`` is 0."""


@dataclass
class LoadRun:
    """Every sample of one load phase, and what the generator itself could not do."""

    samples: list[Sample]
    duration_s: float
    """From the first scheduled send to the last send (the load's length, not counting the tail)."""
    offered: int
    """Requests the schedule called for."""
    client_skipped: int = 0
    """Arrivals not sent because ``max_outstanding`` requests were already in flight."""
    stopped_at: float = 0.0
    """``time.monotonic()`` when the last request was sent (the load stopped)."""

    def statuses(self) -> Counter[int]:
        return Counter(sample.status for sample in self.samples)

    def summary(self) -> dict[str, Any]:
        return summarize(self.samples, self.duration_s) | {
            "offered": self.offered,
            "offered_rate": self.offered / self.duration_s if self.duration_s else 0.0,
            "client_skipped": self.client_skipped,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: Sequence[Sample], duration_s: float) -> dict[str, Any]:
    """Counts by status, connection errors by type, rate of 200s and latency percentiles (ms) of the 200s."""
    ok = [s.latency_s for s in samples if s.status == 200]
    statuses = Counter(s.status for s in samples)
    errors = Counter(s.error for s in samples if s.status == CONNECTION_ERROR)
    return {
        "requests": len(samples),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "connection_errors": dict(errors),
        "ok_rate": len(ok) / duration_s if duration_s else 0.0,
        "latency_ms": {
            "p50": percentile(ok, 50) * 1000,
            "p95": percentile(ok, 95) * 1000,
            "p99": percentile(ok, 99) * 1000,
            "max": max(ok) * 1000 if ok else math.nan,
        },
    }


def encode_bodies(texts: Sequence[str]) -> list[bytes]:
    """One ``{"text": ...}`` JSON body per text."""
    return encode_json([{"text": text} for text in texts])


def encode_json(bodies: Sequence[object]) -> list[bytes]:
    return [json.dumps(body, ensure_ascii=False).encode("utf-8") for body in bodies]


async def _send(client: HttpClient, body: bytes, started: float) -> Sample:
    sent = time.monotonic()
    try:
        status, _ = await client.post(body)
        error = None
    except ClientError as exc:
        status, error = CONNECTION_ERROR, str(exc)
    return Sample(sent - started, time.monotonic() - sent, status, error)


async def closed_loop(url: str, bodies: Sequence[bytes], concurrency: int, duration_s: float) -> LoadRun:
    """``concurrency`` workers, each sending its next request when the previous one is answered."""
    started = time.monotonic()
    end = started + duration_s
    samples: list[Sample] = []
    cycle = itertools.cycle(bodies)

    async def worker(client: HttpClient) -> None:
        while time.monotonic() < end:
            samples.append(await _send(client, next(cycle), started))

    async with new_client(url) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return LoadRun(samples, elapsed, len(samples), stopped_at=time.monotonic())


async def open_loop(
    url: str,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    *,
    max_outstanding: int = MAX_OUTSTANDING,
    on_window: Callable[[int], None] | None = None,
    window_s: float = 0.0,
) -> LoadRun:
    """Send at a fixed ``rate`` (requests/s) for ``duration_s`` seconds, whatever the answers take.

    The schedule is absolute (request ``i`` is due at ``i / rate``), so a late loop catches up instead of
    quietly lowering the rate. At most ``max_outstanding`` requests are in flight; arrivals beyond that are
    counted in ``client_skipped``. Returns once every sent request is answered (or failed).

    Args:
        on_window: Called as ``on_window(index)`` at the end of every ``window_s`` seconds of sending.
    """
    interval = 1.0 / rate
    started = time.monotonic()
    samples: list[Sample] = []
    pending: set[asyncio.Task[None]] = set()
    cycle = itertools.cycle(bodies)
    skipped = 0
    offered = 0
    next_window = window_s if window_s > 0 else math.inf
    window_index = 0

    async def one(client: HttpClient, body: bytes) -> None:
        samples.append(await _send(client, body, started))

    async with new_client(url) as client:
        for index in itertools.count():
            due = index * interval
            if due >= duration_s:
                break
            while due >= next_window:
                if on_window is not None:
                    on_window(window_index)
                window_index += 1
                next_window += window_s
            delay = started + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            offered += 1
            if len(pending) >= max_outstanding:
                skipped += 1
                continue
            task = asyncio.create_task(one(client, next(cycle)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        stopped_at = time.monotonic()
        if on_window is not None and window_s > 0:
            on_window(window_index)
        if pending:
            await asyncio.gather(*pending)
    return LoadRun(samples, stopped_at - started, offered, skipped, stopped_at)


async def probe_latencies(url: str, body: bytes, count: int) -> list[float]:
    """Latency (s) of ``count`` requests sent one after another on one connection; raises on a non-200."""
    latencies = []
    async with new_client(url) as client:
        for _ in range(count):
            sent = time.monotonic()
            status, payload = await client.post(body)
            latencies.append(time.monotonic() - sent)
            if status != 200:
                raise RuntimeError(f"probe answered {status}: {payload[:300]!r}")
    return latencies


def normal_latency_bound(baseline: Sequence[float]) -> float:
    """The most a probe may take and still count as normal: twice the idle p95, and at least 5 ms more."""
    p95 = percentile(baseline, 95)
    return max(2 * p95, p95 + 0.005)


async def recovery_seconds(
    url: str, body: bytes, bound_s: float, *, since: float, needed: int = 3, timeout_s: float = 30.0
) -> float:
    """Seconds from ``since`` (``time.monotonic()`` when the load stopped) until ``needed`` probes in a row
    are answered 200 within ``bound_s``. Returns ``inf`` when that does not happen within ``timeout_s``."""
    streak = 0
    first_good: float | None = None
    async with new_client(url) as client:
        while time.monotonic() - since < timeout_s:
            sent = time.monotonic()
            try:
                status, _ = await client.post(body)
                good = status == 200 and time.monotonic() - sent <= bound_s
            except ClientError:
                good = False
            if good:
                if streak == 0:
                    first_good = sent
                streak += 1
                if streak >= needed:
                    assert first_good is not None
                    return max(0.0, first_good - since)
            else:
                streak = 0
            await asyncio.sleep(0.05)
    return math.inf
