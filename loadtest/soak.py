"""Soak and overload load generation with a lean asyncio HTTP client, against 127.0.0.1 only.

::

    python -m loadtest.soak --model-dir models/disaster-related            # make soak: 10 min at 50%
    python -m loadtest.soak --model-dir models/disaster-related --overload   # promise 2: 2x for 60 s
    python -m loadtest.soak --url http://127.0.0.1:8000 --duration 120     # a service already running

A soak run:

1. starts the service (``python -m service``, default settings) on a free port, unless ``--url`` is given;
2. measures its saturation throughput: a closed loop of ``--saturation-concurrency`` connections, each sending
   its next request as soon as the previous answer arrives, for ``--saturation-seconds``; saturation is the
   rate of 200 answers;
3. sends an open-loop load (a fixed arrival rate, not one that slows down when the server does) at
   ``--fraction`` x saturation for ``--duration`` seconds, split into windows of ``--window`` seconds, and
   samples the server's resident memory (RSS) twice a second;
4. checks the soak promises (docs/reliability.md, promise 5): 0 errors (every answer 200, no dropped
   connection), RSS growth under 10% (largest RSS of the last window over the RSS at the end of the first
   window, which is warm), p99 drift under 20% (p99 of the last window over p99 of the first window); prints
   a table and writes ``artifacts/reliability/soak-<UTC time>.json``. Exits 1 when a promise is missed
   (``--no-gate`` only reports).

The overload test (``tests/reliability/test_overload.py``) uses the same pieces (``closed_loop``,
``open_loop``, ``RssSampler``, ``probe_latencies``, ``recovery_seconds``) at 2x saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from loadtest.messages import load_messages

# Promise 5 (docs/reliability.md).
MAX_RSS_GROWTH = 0.10
MAX_P99_DRIFT = 0.20
DEFAULT_REPORT_DIR = Path("artifacts/reliability")
# A closed loop this wide keeps the batcher's batches full without reaching the admission limit (256).
SATURATION_CONCURRENCY = 64
# Most requests the open loop keeps in flight; over the service's default queue (256) so the service, not the
# client, decides what is admitted. Arrivals beyond it are counted as ``client_skipped``, never silently lost.
MAX_OUTSTANDING = 1024
T = TypeVar("T")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_IDLE_S = 2.0
"""Client keep-alive connections idle longer than this are closed, not reused (uvicorn closes them at 5 s)."""
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


class ClientError(Exception):
    """No HTTP answer: the connection was refused, reset or closed early, or the answer timed out."""


class HttpClient:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams, for POSTing JSON to 127.0.0.1.

    httpx costs ~10x more CPU per request; on a 2-core machine shared with the server, that CPU would come out
    of the server's share and cap the load the client can offer. Each request takes an idle connection (or
    opens one), so concurrency is bounded by the callers, never by a pool.
    """

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.port = parsed.port or 80
        self.path = parsed.raw_path.decode("ascii") or "/"
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode("ascii")

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _ in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send ``body``; returns (status, response body). Raises ``ClientError`` when no answer came."""
        connection = self._reuse()
        if connection is None:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise ClientError(type(exc).__name__) from exc
        else:
            reader, writer = connection
        keep = False
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(self._head + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lowered = head.lower()
                if b"transfer-encoding: chunked" in lowered:
                    payload = await _read_chunked(reader)
                else:
                    length = _content_length(lowered)
                    payload = await reader.readexactly(length) if length else b""
                keep = b"connection: close" not in lowered
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            writer.close()
            raise ClientError(type(exc).__name__) from exc
        if keep:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, payload

    def _reuse(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection the server has not closed, if any.

        A server closes keep-alive connections idle for a while (uvicorn: 5 s). Sending on one of those is a
        race the client loses with a reset, which is the client's fault, not a dropped connection: like
        urllib3, never reuse a connection that is at EOF or idle for longer than ``MAX_IDLE_S``.
        """
        now = time.monotonic()
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            if reader.at_eof() or writer.is_closing() or now - idle_since > MAX_IDLE_S:
                writer.close()
                continue
            return reader, writer
        return None


def _content_length(head: bytes) -> int:
    marker = head.find(b"content-length:")
    if marker < 0:
        return 0
    return int(head[marker + 15 : head.index(b"\r\n", marker)].strip())


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (it is, with uvicorn[standard]): less client CPU."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with the serve extra
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def new_client(url: str, timeout_s: float = 60.0) -> HttpClient:
    return HttpClient(url, timeout_s)


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
    on_window: Any = None,
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


@dataclass
class RssSampler:
    """Samples one process's resident memory (bytes) every ``interval_s`` in the background."""

    pid: int
    interval_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def now(self) -> int:
        """RSS of the process and its children (worker processes), in bytes."""
        root = psutil.Process(self.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.samples.append((time.monotonic(), self.now()))
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(self, since: float = 0.0) -> int:
        values = [rss for at, rss in self.samples if at >= since]
        return max(values) if values else 0


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


# The soak --------------------------------------------------------------------------------------------------


@dataclass
class Window:
    index: int
    summary: dict[str, Any]
    rss_bytes_end: int
    rss_bytes_peak: int


@dataclass
class SoakResult:
    date: str
    url: str
    model_dir: str | None
    model: dict[str, Any]
    saturation: dict[str, Any]
    rate: float
    fraction: float
    duration_s: float
    run: dict[str, Any]
    windows: list[dict[str, Any]]
    rss_warm_bytes: int
    rss_peak_last_bytes: int
    rss_growth: float
    p99_first_ms: float
    p99_last_ms: float
    p99_drift: float
    errors: int
    verdicts: dict[str, bool]
    machine: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(self.verdicts.values())


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
    log: Any = print,
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
    log: Any = print,
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


def _get_json(url: str) -> Any:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def pid_listening_on(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port`` (for ``--url`` runs), if visible."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="Bundle to serve (starts python -m service on it).")
    target.add_argument("--url", help="A service already running on 127.0.0.1 (give --pid if not found).")
    parser.add_argument("--pid", type=int, help="The service's pid for RSS (with --url).")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="Run the overload check instead (promise 2): --fraction 2.0 for --duration 60 by default.",
    )
    parser.add_argument("--duration", type=float, help="Seconds of load (soak 600, overload 60).")
    parser.add_argument(
        "--fraction", type=float, help="Load as a share of saturation (soak 0.5, overload 2)."
    )
    parser.add_argument("--window", type=float, default=60.0, help="Seconds per reporting window (60).")
    parser.add_argument(
        "--saturation-seconds", type=float, default=20.0, help="Length of the saturation run (20)."
    )
    parser.add_argument(
        "--saturation-concurrency",
        type=int,
        default=SATURATION_CONCURRENCY,
        help=f"Connections of that closed loop ({SATURATION_CONCURRENCY}).",
    )
    parser.add_argument("--warmup-seconds", type=float, default=10.0, help="Warm-up before measuring (10).")
    parser.add_argument(
        "--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help=f"JSON reports ({DEFAULT_REPORT_DIR})."
    )
    parser.add_argument("--no-gate", action="store_true", help="Report only; exit 0 on a missed promise.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration is None:
        args.duration = 60.0 if args.overload else 600.0
    if args.fraction is None:
        args.fraction = 2.0 if args.overload else 0.5
    messages = load_messages()
    bodies = encode_bodies(messages.texts)
    print(f"messages: {len(bodies)} from {messages.source}", flush=True)
    report_dir: Path = args.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "overload" if args.overload else "soak"

    with contextlib.ExitStack() as stack:
        if args.model_dir is not None:
            from core.host import free_port
            from loadtest.servers import ServerProcess, service_command

            port = free_port()
            server = ServerProcess(
                "service",
                service_command(args.model_dir, port),
                port,
                report_dir / f"{kind}-{stamp}-service.log",
            )
            stack.enter_context(server)
            assert server.process is not None
            url, pid = server.url, server.process.pid
        else:
            url = args.url.rstrip("/")
            if httpx.URL(url).host not in LOOPBACK:
                print(f"error: --url must point at this machine ({', '.join(LOOPBACK)})", file=sys.stderr)
                return 2
            port = httpx.URL(url).port or 80
            found = args.pid or pid_listening_on(port)
            if found is None:
                print("error: cannot find the service's pid; pass --pid", file=sys.stderr)
                return 2
            pid = found
        info = _get_json(url + "/info")
        print(f"service {url} (pid {pid}): {info['name']} {info['version']}", flush=True)
        if args.overload:
            return _run_overload(
                args, url, pid, info, bodies=bodies, path=report_dir / f"overload-{stamp}.json"
            )
        saturation, load, windows, _sampler = run_async(
            soak(
                url,
                pid,
                bodies,
                duration_s=args.duration,
                fraction=args.fraction,
                window_s=min(args.window, args.duration),
                saturation_s=args.saturation_seconds,
                saturation_concurrency=args.saturation_concurrency,
                warmup_s=args.warmup_seconds,
                log=_log,
            )
        )
    verdicts, figures, errors = evaluate(windows, load)
    result = SoakResult(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        url=url,
        model_dir=str(args.model_dir) if args.model_dir else None,
        model={"name": info["name"], "version": info["version"]},
        saturation=saturation,
        rate=load.offered / load.duration_s if load.duration_s else 0.0,
        fraction=args.fraction,
        duration_s=load.duration_s,
        run=load.summary(),
        windows=[asdict(window) for window in windows],
        errors=errors,
        verdicts=verdicts,
        machine=machine(),
        rss_warm_bytes=int(figures["rss_warm_bytes"]),
        rss_peak_last_bytes=int(figures["rss_peak_last_bytes"]),
        rss_growth=figures["rss_growth"],
        p99_first_ms=figures["p99_first_ms"],
        p99_last_ms=figures["p99_last_ms"],
        p99_drift=figures["p99_drift"],
    )
    path = report_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps(asdict(result), indent=2, default=str) + "\n", encoding="utf-8")
    summary = load.summary()
    print(
        f"\nsoak: {result.duration_s:.0f} s at {result.rate:.1f} req/s "
        f"({args.fraction:.2f} x saturation {saturation['ok_rate']:.1f} req/s), "
        f"{summary['requests']} requests, statuses {summary['statuses']}, errors {errors}\n"
        f"  RSS warm {result.rss_warm_bytes / 2**20:.1f} MiB -> last-window peak "
        f"{result.rss_peak_last_bytes / 2**20:.1f} MiB: growth {result.rss_growth * 100:+.1f}% "
        f"(limit {MAX_RSS_GROWTH * 100:.0f}%)\n"
        f"  p99 first window {result.p99_first_ms:.1f} ms -> last window {result.p99_last_ms:.1f} ms: drift "
        f"{result.p99_drift * 100:+.1f}% (limit {MAX_P99_DRIFT * 100:.0f}%)\n"
        f"  overall p50 {summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms\n"
        f"  verdicts: {verdicts}\n  report: {path}",
        flush=True,
    )
    if not result.passed and not args.no_gate:
        return 1
    return 0


def _log(text: str) -> None:
    print(text, flush=True)


def _run_overload(
    args: argparse.Namespace, url: str, pid: int, info: dict[str, Any], *, bodies: list[bytes], path: Path
) -> int:
    result = run_async(
        overload(
            url,
            pid,
            bodies,
            duration_s=args.duration,
            deadline_s=float(info["limits"]["request_deadline_seconds"]),
            factor=args.fraction,
            saturation_s=args.saturation_seconds,
            saturation_concurrency=args.saturation_concurrency,
            warmup_s=args.warmup_seconds,
            log=_log,
        )
    )
    result |= {"url": url, "model_dir": str(args.model_dir) if args.model_dir else None}
    result["model"] = {"name": info["name"], "version": info["version"]}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"  report: {path}", flush=True)
    if not all(result["verdicts"].values()) and not args.no_gate:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
