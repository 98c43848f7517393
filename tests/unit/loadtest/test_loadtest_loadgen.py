"""The load generator behind the overload test and ``make soak`` (``loadtest/loadgen.py``) measures what it
says: its HTTP client (``loadtest/client.py``) reads answers and reports refused or cut connections as such,
the open loop offers the asked rate, and the soak verdicts (``loadtest/promises.py``) fail on errors, memory
growth and p99 drift. Against a small local asyncio server, offline, in a second or two."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from core.host import free_port
from loadtest.client import new_client
from loadtest.loadgen import CONNECTION_ERROR, LoadRun, Sample, open_loop, percentile, summarize
from loadtest.promises import Window, evaluate


@contextlib.asynccontextmanager
async def http_server(statuses: list[int], close_after: int | None = None) -> AsyncIterator[str]:
    """Answers POSTs with the given statuses in turn (keep-alive); drops the connection without an answer
    on request number ``close_after``."""
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                count += 1
                if close_after is not None and count == close_after:
                    writer.close()
                    return
                status = statuses[(count - 1) % len(statuses)]
                body = b'{"ok": true}'
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        yield f"http://127.0.0.1:{port}/classify"


def test_client_reads_statuses_and_bodies_over_one_connection() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        async with http_server([200, 429, 503]) as url, new_client(url) as client:
            return [await client.post(b'{"text": "x"}') for _ in range(4)]

    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200, 429, 503, 200]
    assert all(body == b'{"ok": true}' for _, body in answers)


def test_dropped_and_refused_connections_are_counted_not_hidden() -> None:
    async def scenario() -> LoadRun:
        async with http_server([200], close_after=3) as url:
            return await open_loop(url, [b"{}"], rate=200, duration_s=0.05)

    run = asyncio.run(scenario())
    statuses = run.statuses()
    assert statuses[CONNECTION_ERROR] == 1
    assert statuses[200] == run.offered - 1
    refused = asyncio.run(open_loop(f"http://127.0.0.1:{free_port()}/classify", [b"{}"], 100, 0.03))
    assert set(refused.statuses()) == {CONNECTION_ERROR}
    assert all(sample.error for sample in refused.samples)


def test_open_loop_offers_the_asked_rate() -> None:
    async def scenario() -> LoadRun:
        async with http_server([200]) as url:
            return await open_loop(url, [b"{}"], rate=400, duration_s=0.5)

    run = asyncio.run(scenario())
    assert run.offered == 200
    assert run.client_skipped == 0
    assert len(run.samples) == 200
    assert run.duration_s == pytest.approx(0.5, abs=0.1)


def window(index: int, p99_ms: float, rss_end: int, rss_peak: int, errors: int = 0) -> Window:
    samples = [Sample(0.0, 0.001, 200)] * 98 + [Sample(0.0, p99_ms / 1000, 200)] * 2
    samples += [Sample(0.0, 0.001, 500)] * errors
    return Window(index, summarize(samples, 60.0), rss_end, rss_peak)


def test_soak_verdicts_fail_on_errors_growth_and_drift() -> None:
    clean = LoadRun([Sample(0.0, 0.001, 200)] * 10, 600.0, 10)
    steady = [window(0, 20.0, 100, 100), window(1, 21.0, 100, 105)]
    verdicts, figures, errors = evaluate(steady, clean)
    assert verdicts == {"zero_errors": True, "rss_growth_under_10pct": True, "p99_drift_under_20pct": True}
    assert figures["rss_growth"] == pytest.approx(0.05)
    assert errors == 0

    leaking = [window(0, 20.0, 100, 100), window(1, 20.0, 120, 125)]
    assert not evaluate(leaking, clean)[0]["rss_growth_under_10pct"]
    drifting = [window(0, 20.0, 100, 100), window(1, 30.0, 100, 100)]
    assert not evaluate(drifting, clean)[0]["p99_drift_under_20pct"]
    failing = LoadRun([Sample(0.0, 0.001, 200), Sample(0.0, 0.001, 503)], 600.0, 3, client_skipped=1)
    verdicts, _, errors = evaluate(steady, failing)
    assert not verdicts["zero_errors"]
    assert errors == 2


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
