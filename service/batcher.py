"""Dynamic micro-batching: one batcher per process turns many small requests into few ONNX Runtime calls.

Requests are admitted (or refused at once with 429 when ``queue_size`` requests are already admitted and not
answered), tokenized by the caller (``service.infer.Infer``) so their lengths are known, and queued. A single
loop takes what is queued (no fixed wait when idle; an optional ``max_wait_ms``), plans batches with
``core.batching.plan_batches``: grouping by length under ``max_batch_size`` texts and ``max_batch_tokens``
padded tokens, runs each batch in a worker thread (ONNX Runtime releases the GIL, so the event loop keeps
admitting and tokenizing the next requests meanwhile) and resolves each request when all its texts are scored.
Texts of one request may land in different batches; each text's scores do not depend on its batch-mates
beyond float rounding, because batches are padded with an attention mask.

Work still queued past its deadline is dropped instead of computed for nobody. ``stop`` refuses new work,
drains what was admitted, then ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from core.batching import RUN_COST_TOKENS, plan_batches
from core.engine import Engine, Tokenized
from service.errors import InternalError, QueueFullError, ShuttingDownError
from service.metrics import ServiceMetrics

logger = logging.getLogger("textclf.service")

# How many batches' worth of queued texts one planning round looks at: enough to group by length, few enough
# that a newly arrived request is not stuck behind a long round.
WINDOW_BATCHES = 4


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a request gets back: scores in input order and where its time went."""

    scores: np.ndarray
    queue_seconds: float
    inference_seconds: float
    batch_size: int
    """Largest batch any of the request's texts ran in."""


@dataclass(eq=False)
class Job:
    """One admitted request."""

    admitted_at: float
    deadline: float
    future: asyncio.Future[BatchResult]
    items: list[Tokenized] = field(default_factory=list)
    scores: np.ndarray | None = None
    taken: int = 0
    remaining: int = 0
    started_at: float | None = None
    inference_seconds: float = 0.0
    batch_size: int = 0
    abandoned: bool = False
    finished: bool = False

    def abandon(self) -> None:
        """The caller stopped waiting (deadline): drop texts not yet run."""
        self.abandoned = True


class Batcher:
    """Bounded admission + one batching loop over an ``Engine``."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        queue_size: int,
        max_wait_ms: float = 0.0,
        metrics: ServiceMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.queue_size = queue_size
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self.clock = clock
        self.num_labels = len(engine.manifest.labels)
        self._waiting: deque[Job] = deque()
        self._pending = 0
        self._accepting = True
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # One thread: ONNX Runtime already spreads one run over every core; two concurrent runs would fight.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textclf-infer")
        if metrics is not None:
            metrics.queue_capacity.set(queue_size)

    @property
    def pending(self) -> int:
        """Requests admitted and not yet answered."""
        return self._pending

    @property
    def accepting(self) -> bool:
        return self._accepting

    def queue_full(self) -> QueueFullError | None:
        """The 429 a new request gets while ``queue_size`` requests are admitted and not answered; None while
        there is room. ``admit`` applies it, and so does ``Infer`` before a request's body is read."""
        if self._pending < self.queue_size:
            return None
        return QueueFullError(
            "too many requests queued; retry after a moment", detail={"queue_size": self.queue_size}
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="textclf-batcher")

    def admit(self, deadline_seconds: float, arrived_at: float | None = None) -> Job:
        """Reserve a place for one request, or refuse it now. The deadline is ``deadline_seconds`` after
        ``arrived_at`` (when the request arrived, on ``clock``), or after now when not given.

        Raises:
            ShuttingDownError: ``stop`` was called.
            QueueFullError: ``queue_size`` requests are admitted and not answered yet.
        """
        if not self._accepting:
            raise ShuttingDownError("the service is shutting down; retry on another instance")
        full = self.queue_full()
        if full is not None:
            raise full
        now = self.clock()
        job = Job(
            admitted_at=now,
            deadline=(now if arrived_at is None else arrived_at) + deadline_seconds,
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending += 1
        self._idle.clear()
        return job

    def release(self, job: Job) -> None:
        """Give back an admitted place that will not be submitted (e.g. tokenization refused the text)."""
        self._finish(job)

    def submit(self, job: Job, items: Sequence[Tokenized]) -> None:
        """Queue an admitted request's tokenized texts; ``job.future`` resolves with the scores."""
        job.items = list(items)
        job.remaining = len(job.items)
        job.scores = np.zeros((len(job.items), self.num_labels), dtype=np.float32)
        if not job.items:
            self._resolve(job)
            return
        self._waiting.append(job)
        self._set_depth()
        self._wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Refuse new work, let admitted work finish (up to ``timeout`` seconds), then end the loop."""
        self._accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        for job in list(self._waiting):
            self._fail(job, ShuttingDownError("the service shut down before this request ran"))
        self._waiting.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # The loop -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.max_wait > 0 and self._waiting_texts() < self.max_batch_size:
                await asyncio.sleep(self.max_wait)
            while self._waiting:
                window = self._take(self.max_batch_size * WINDOW_BATCHES)
                if window:
                    await self._run_window(window)

    def _waiting_texts(self) -> int:
        return sum(len(job.items) - job.taken for job in self._waiting)

    def _take(self, limit: int) -> list[tuple[Job, int]]:
        """Oldest queued texts first, up to ``limit``; drops work whose caller gave up or ran out of time."""
        now = self.clock()
        window: list[tuple[Job, int]] = []
        while self._waiting and len(window) < limit:
            job = self._waiting[0]
            if job.abandoned or (job.taken == 0 and now >= job.deadline):
                # The caller answers 503 itself when its deadline passes; nobody waits for this work.
                self._waiting.popleft()
                job.abandoned = True
                self._finish(job)
                continue
            count = min(len(job.items) - job.taken, limit - len(window))
            window.extend((job, job.taken + offset) for offset in range(count))
            job.taken += count
            if job.taken == len(job.items):
                self._waiting.popleft()
        self._set_depth()
        return window

    async def _run_window(self, window: list[tuple[Job, int]]) -> None:
        lengths = [job.items[index].length for job, index in window]
        # Group by length with a per-run cost: one long text no longer pads many short ones to its length.
        plan = plan_batches(lengths, self.max_batch_size, self.max_batch_tokens, RUN_COST_TOKENS)
        for batch in plan:
            members = [window[i] for i in batch if not window[i][0].abandoned]
            for job in {id(job): job for job, _ in members}.values():
                job.batch_size = max(job.batch_size, len(members))
            if not members:
                for job, _ in (window[i] for i in batch):
                    self._maybe_finish_abandoned(job)
                continue
            await self._run_batch(members)
        for job, _ in window:
            self._maybe_finish_abandoned(job)

    async def _run_batch(self, members: list[tuple[Job, int]]) -> None:
        """One engine run over the texts ``members`` name; their jobs get the scores, or the failure."""
        started = self.clock()
        self._mark_started(members, started)
        tokens = [job.items[index] for job, index in members]
        try:
            loop = asyncio.get_running_loop()
            scores = await loop.run_in_executor(self._executor, self.engine.infer, tokens)
        except Exception as exc:
            logger.error(
                "inference failed",
                exc_info=exc,
                extra={"fields": {"event": "inference_error", "batch_size": len(members)}},
            )
            for job, _ in members:
                self._fail(job, InternalError("inference failed; see the service log"))
            return
        elapsed = self.clock() - started
        if self.metrics is not None:
            self.metrics.inference_duration.observe(elapsed)
            self.metrics.batch_size.observe(len(members))
            self.metrics.batch_tokens.observe(max(t.length for t in tokens) * len(tokens))
        self._deliver(members, scores, elapsed)

    def _mark_started(self, members: list[tuple[Job, int]], started: float) -> None:
        """A job's queue time ends when its first text enters a batch."""
        for job, _ in members:
            if job.started_at is None:
                job.started_at = started
                if self.metrics is not None:
                    self.metrics.queue_duration.observe(started - job.admitted_at)

    def _deliver(self, members: list[tuple[Job, int]], scores: np.ndarray, elapsed: float) -> None:
        """Each score row to its job's slot; a job whose last text arrived is resolved."""
        seen: set[int] = set()
        for (job, index), row in zip(members, scores, strict=True):
            if id(job) not in seen:
                job.inference_seconds += elapsed
                seen.add(id(job))
            if job.finished:
                continue
            assert job.scores is not None
            job.scores[index] = row
            job.remaining -= 1
            if job.remaining == 0:
                self._resolve(job)

    def _maybe_finish_abandoned(self, job: Job) -> None:
        if job.abandoned and not job.finished and job.taken == len(job.items):
            self._finish(job)

    def _resolve(self, job: Job) -> None:
        if not job.future.done() and not job.abandoned:
            assert job.scores is not None
            started = job.started_at if job.started_at is not None else job.admitted_at
            job.future.set_result(
                BatchResult(
                    scores=job.scores,
                    queue_seconds=started - job.admitted_at,
                    inference_seconds=job.inference_seconds,
                    batch_size=job.batch_size,
                )
            )
        self._finish(job)

    def _fail(self, job: Job, error: Exception) -> None:
        if not job.future.done() and not job.abandoned:
            job.future.set_exception(error)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        if job.finished:
            return
        job.finished = True
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
