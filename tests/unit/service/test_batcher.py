"""The batcher on its own, over a fake engine: caps, order, draining on stop, dropping expired work."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from core.bundle import load_bundle
from service.batcher import Batcher
from service.errors import QueueFullError, ShuttingDownError
from tests.support.fakes import FakeEngine

TEXTS = [
    "help",
    "we need water",
    "families need food and tents after the flood",
    "the bridge collapsed and people are trapped in the school please send rescue",
    "nice lunch today",
    "storm",
]


def make(
    fake_bundle_dir: Path, gate: threading.Event | None = None, **limits: int
) -> tuple[Batcher, FakeEngine]:
    engine = FakeEngine(load_bundle(fake_bundle_dir), gate=gate)
    options = {"max_batch_size": 32, "max_batch_tokens": 4096, "queue_size": 64, **limits}
    return Batcher(engine, **options), engine


def test_batches_respect_the_size_and_token_caps(fake_bundle_dir: Path) -> None:
    async def scenario() -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
        batcher, engine = make(fake_bundle_dir, max_batch_size=3, max_batch_tokens=60)
        batcher.start()
        jobs = []
        for _ in range(4):  # queued before the loop runs: one planning round sees them all
            job = batcher.admit(10.0)
            batcher.submit(job, engine.tokenize(TEXTS))
            jobs.append(job)
        results = await asyncio.gather(*(job.future for job in jobs))
        await batcher.stop(1.0)
        batches = list(engine.batches)
        alone = [engine.infer(engine.tokenize([text]))[0] for text in TEXTS]
        return batches, [r.scores for r in results], alone

    batches, scores, alone = asyncio.run(scenario())
    assert sum(batches) == 4 * len(TEXTS)
    assert max(batches) <= 3
    assert len(batches) >= 8  # 24 texts, at most 3 each
    for request_scores in scores:
        np.testing.assert_allclose(request_scores, np.stack(alone), atol=1e-6)


def test_long_texts_get_smaller_batches_under_the_token_cap(fake_bundle_dir: Path) -> None:
    async def scenario() -> list[int]:
        batcher, engine = make(fake_bundle_dir, max_batch_size=32, max_batch_tokens=64)
        long_text = " ".join(["flood"] * 28)  # 30 tokens with [CLS]/[SEP]: two fit under 64
        batcher.start()
        job = batcher.admit(10.0)
        batcher.submit(job, engine.tokenize([long_text] * 6))
        await job.future
        await batcher.stop(1.0)
        return engine.batches

    assert asyncio.run(scenario()) == [2, 2, 2]


def test_admission_is_bounded_and_stop_drains_admitted_work(fake_bundle_dir: Path) -> None:
    async def scenario() -> None:
        gate = threading.Event()
        batcher, engine = make(fake_bundle_dir, gate=gate, queue_size=3)
        batcher.start()
        jobs = [batcher.admit(10.0) for _ in range(3)]
        with pytest.raises(QueueFullError):
            batcher.admit(10.0)
        for job in jobs:
            batcher.submit(job, engine.tokenize(["we need water"]))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(batcher.stop(10.0))
        await asyncio.sleep(0.05)
        with pytest.raises(ShuttingDownError):
            batcher.admit(10.0)
        gate.set()
        await stopping
        assert all(job.future.done() and job.future.exception() is None for job in jobs)
        assert batcher.pending == 0

    asyncio.run(scenario())


def test_work_past_its_deadline_is_dropped_not_computed(fake_bundle_dir: Path) -> None:
    async def scenario() -> None:
        gate = threading.Event()
        batcher, engine = make(fake_bundle_dir, gate=gate)
        batcher.start()
        first = batcher.admit(10.0)
        batcher.submit(first, engine.tokenize(["we need water"]))
        while not engine.entered.is_set():
            await asyncio.sleep(0.005)
        late = batcher.admit(0.01)  # queued behind the held batch; expires while waiting
        batcher.submit(late, engine.tokenize(["nobody waits for this"] * 5))
        await asyncio.sleep(0.05)
        gate.set()
        await first.future
        await batcher.stop(5.0)
        assert engine.batches == [1]  # only the first request's text ran
        assert not late.future.done()  # its caller answers 503 on its own deadline
        assert batcher.pending == 0

    asyncio.run(scenario())


def test_abandoned_request_frees_its_place(fake_bundle_dir: Path) -> None:
    async def scenario() -> None:
        gate = threading.Event()
        batcher, engine = make(fake_bundle_dir, gate=gate, queue_size=2)
        batcher.start()
        running = batcher.admit(10.0)
        batcher.submit(running, engine.tokenize(["held"]))
        while not engine.entered.is_set():
            await asyncio.sleep(0.005)
        waiting = batcher.admit(10.0)
        batcher.submit(waiting, engine.tokenize(["given up"]))
        waiting.abandon()
        gate.set()
        await running.future
        for _ in range(100):
            if batcher.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert batcher.pending == 0
        assert engine.batches == [1]
        await batcher.stop(1.0)

    asyncio.run(scenario())
