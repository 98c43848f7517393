"""``Infer``: the one object between the HTTP layer and the model (after text-embeddings-inference's
``Infer``, router/src/infer.rs).

It owns the model's state (loading, ready, not ready, shutting down), the in-flight cap, text validation,
tokenization, admission to the batcher's queue, the request deadline, and the count of every request it
refuses (``textclf_rejections_total``). The request middleware takes a permit before the body is read
(``acquire_permit``); the handler makes one call, ``classify``, and shapes what it returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TypeVar

from msgspec import UNSET

from core.bundle import Manifest
from core.engine import Engine, Prediction, Tokenized
from core.engine import TextTooLongError as EngineTextTooLongError
from service.batcher import Batcher, BatchResult, Job
from service.context import RequestContext
from service.errors import (
    DeadlineExceededError,
    EmptyTextError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
    RequestValidationError,
    ServiceError,
    ShuttingDownError,
    TextTooLongError,
    TooManyCharactersError,
    TooManyItemsError,
)
from service.metrics import RejectionReason, ServiceMetrics
from service.schemas import ClassifyRequest
from service.settings import Settings

# Tokenize inline below this many characters (microseconds); in a thread above it, so a long request does
# not stall the event loop for everyone else.
_INLINE_TOKENIZE_CHARS = 4096

_Error = TypeVar("_Error", bound=ServiceError)


@dataclass(frozen=True, slots=True)
class Classified:
    """One request's answer before it is shaped for the wire."""

    manifest: Manifest
    predictions: list[Prediction]
    tokenized: list[Tokenized]
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float


class Infer:
    """Validation, tokenization, admission, the in-flight cap, the queue, deadlines and rejection counting."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.status = "loading"
        """``loading`` -> ``ok`` (ready) or ``not_ready`` (bad bundle); ``shutting_down`` after SIGTERM."""
        self.reason: str | None = "loading the model bundle"
        self.manifest: Manifest | None = None
        self._engine: Engine | None = None
        self._batcher: Batcher | None = None
        self._in_flight = 0
        """POST /classify requests holding a permit (``max_in_flight``)."""

    # The model's state ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.status == "ok"

    @property
    def pending(self) -> int:
        """Requests admitted to the batcher and not answered yet."""
        return self._batcher.pending if self._batcher is not None else 0

    def start(self, engine: Engine, manifest: Manifest) -> None:
        """The model is loaded, verified and warmed up: start the batcher and report ready."""
        settings = self.settings
        batcher = Batcher(
            engine,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            queue_size=settings.queue_size,
            max_wait_ms=settings.max_wait_ms,
            metrics=self.metrics,
        )
        batcher.start()
        self._engine, self._batcher, self.manifest = engine, batcher, manifest
        self.metrics.set_model(
            manifest.name, manifest.version, manifest.quantization.mode, manifest.labels, manifest.label_prior
        )
        self.status, self.reason = "ok", None
        self.metrics.ready.set(1)

    def fail(self, reason: str) -> None:
        """The model could not be loaded: stay up, not ready, saying why."""
        self.status, self.reason = "not_ready", reason

    def begin_shutdown(self) -> None:
        """Not ready from now on; ``/classify`` answers 503 shutting_down."""
        self.status, self.reason = "shutting_down", "the service is shutting down"
        self.metrics.ready.set(0)

    async def drain(self, timeout: float) -> None:
        """Let admitted work finish (up to ``timeout`` seconds), then stop the batcher."""
        if self._batcher is not None:
            await self._batcher.stop(timeout)

    # Admission before the body is read ------------------------------------------------------------------

    def acquire_permit(self) -> None:
        """Let a new POST /classify in, or refuse it before its body is read.

        Refusing here costs no body read and no JSON decode, so under overload the event loop's time goes to
        the requests that will be answered. Release the permit with ``release_permit`` when the request ends.

        Raises:
            QueueFullError: the batcher's queue is full (429 queue_full).
            OverloadedError: ``max_in_flight`` requests are already being handled (429 overloaded); this also
                bounds the requests still reading or decoding their body, which the queue does not see.
        """
        batcher = self._batcher
        if batcher is not None and batcher.accepting:
            full = batcher.queue_full()
            if full is not None:
                raise self._refuse("queue_full", full)
        limit = self.settings.in_flight_limit
        if self._in_flight >= limit:
            raise self._refuse(
                "in_flight",
                OverloadedError(
                    "too many requests in flight; retry after a moment", detail={"max_in_flight": limit}
                ),
            )
        self._in_flight += 1

    def release_permit(self) -> None:
        self._in_flight -= 1

    # One request ----------------------------------------------------------------------------------------

    async def classify(self, request: ClassifyRequest, context: RequestContext) -> Classified:
        """Validate, tokenize and score the request's texts within its deadline.

        Args:
            request: The decoded body: ``text`` or ``texts``, and ``truncate``.
            context: The request's arrival time (the deadline counts from it); receives ``num_texts``,
                ``texts`` and ``batch_size`` for the log line.

        Raises:
            ServiceError: the 4xx or 503 the client gets (not ready, invalid texts, text too long, queue full,
                deadline exceeded, shutting down).
        """
        engine, batcher, manifest = self._serving()
        texts = validate_texts(request, self.settings)
        context.num_texts = len(texts)
        if self.settings.log_request_text:
            context.texts = texts
        deadline_seconds = self.settings.request_deadline_seconds
        if batcher.clock() >= context.arrived_at + deadline_seconds:
            raise self._refuse("deadline", self._deadline_exceeded())
        job = self._admit(batcher, context.arrived_at)
        started = time.perf_counter()
        try:
            if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
                tokenized = engine.tokenize(texts, truncate=request.truncate)
            else:
                tokenized = await asyncio.to_thread(engine.tokenize, texts, request.truncate)
        except BaseException as exc:
            batcher.release(job)
            if isinstance(exc, EngineTextTooLongError):
                raise _text_too_long(request, exc) from exc
            if isinstance(exc, asyncio.CancelledError):
                raise self._cancelled_by_shutdown() from None
            raise
        tokenization_seconds = time.perf_counter() - started
        self._observe_tokens(tokenization_seconds, tokenized)
        result = await self._run(batcher, job, tokenized)
        context.batch_size = result.batch_size
        predictions = engine.postprocess(result.scores)
        self._observe_predictions(predictions)
        return Classified(
            manifest=manifest,
            predictions=predictions,
            tokenized=tokenized,
            tokenization_seconds=tokenization_seconds,
            queue_seconds=result.queue_seconds,
            inference_seconds=result.inference_seconds,
        )

    def _serving(self) -> tuple[Engine, Batcher, Manifest]:
        if not self.ready or self._engine is None or self._batcher is None or self.manifest is None:
            if self.status == "shutting_down":
                raise self._refuse("shutting_down", ShuttingDownError("the service is shutting down"))
            raise self._refuse(
                "not_ready",
                NotReadyError(f"the model is not ready: {self.reason}", detail={"reason": self.reason}),
            )
        return self._engine, self._batcher, self.manifest

    def _admit(self, batcher: Batcher, arrived_at: float) -> Job:
        try:
            return batcher.admit(self.settings.request_deadline_seconds, arrived_at=arrived_at)
        except QueueFullError as exc:
            raise self._refuse("queue_full", exc) from None
        except ShuttingDownError as exc:
            raise self._refuse("shutting_down", exc) from None

    async def _run(self, batcher: Batcher, job: Job, tokenized: list[Tokenized]) -> BatchResult:
        """Queue the tokenized texts and wait for their scores until the deadline."""
        batcher.submit(job, tokenized)
        remaining = job.deadline - batcher.clock()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=max(remaining, 0.0))
        except TimeoutError:
            job.abandon()
            raise self._refuse("deadline", self._deadline_exceeded()) from None
        except asyncio.CancelledError:
            job.abandon()
            raise self._cancelled_by_shutdown() from None

    def _refuse(self, reason: RejectionReason, error: _Error) -> _Error:
        self.metrics.reject(reason)
        return error

    def _deadline_exceeded(self) -> DeadlineExceededError:
        seconds = self.settings.request_deadline_seconds
        return DeadlineExceededError(
            f"no answer within the {seconds} s request deadline", detail={"request_deadline_seconds": seconds}
        )

    def _cancelled_by_shutdown(self) -> ShuttingDownError:
        """uvicorn cancels the requests still running when its graceful-shutdown timeout ends. Answer those
        503 shutting_down (retry elsewhere), not uvicorn's plain 500 with a traceback; their queued texts are
        dropped so the batcher does not compute them for nobody while the process is trying to exit."""
        return self._refuse(
            "shutting_down",
            ShuttingDownError(
                "the service shut down before this request finished; retry on another instance"
            ),
        )

    def _observe_tokens(self, seconds: float, tokenized: list[Tokenized]) -> None:
        metrics = self.metrics
        metrics.tokenization_duration.observe(seconds)
        for item in tokenized:
            metrics.input_tokens.observe(item.num_tokens)
            if item.truncated:
                metrics.truncated.inc()

    def _observe_predictions(self, predictions: list[Prediction]) -> None:
        metrics = self.metrics
        metrics.texts.inc(len(predictions))
        for prediction in predictions:
            metrics.predictions.labels(label=prediction.label).inc()
            metrics.prediction_score.labels(label=prediction.label).observe(prediction.score)


def _field(request: ClassifyRequest, index: int) -> str:
    """How errors name a text: ``text``, or ``texts[i]``."""
    return "text" if isinstance(request.text, str) else f"texts[{index}]"


def validate_texts(request: ClassifyRequest, settings: Settings) -> list[str]:
    """The request's texts, or the first problem with them as a 4xx error naming the item.

    Only an empty or whitespace-only text, or one over ``max_text_chars``, is refused: control characters,
    zero-width and bidi marks, any script and emoji are classified (the tokenizer's normalizer decides what
    reaches the model; see ``service/text.py``).
    """
    if (request.text is UNSET) == (request.texts is UNSET):
        raise RequestValidationError(
            "send exactly one of `text` (a string) or `texts` (a list of strings)",
            detail={"fields": ["text", "texts"]},
        )
    texts = [request.text] if isinstance(request.text, str) else list(request.texts or [])
    if not texts:
        raise RequestValidationError("`texts` must hold at least one text", detail={"field": "texts"})
    if len(texts) > settings.max_items:
        raise TooManyItemsError(
            f"{len(texts)} texts in one request; the limit is {settings.max_items}",
            detail={"count": len(texts), "max_items": settings.max_items},
        )
    for index, text in enumerate(texts):
        where = _field(request, index)
        if len(text) > settings.max_text_chars:
            raise TooManyCharactersError(
                f"{where} has {len(text)} characters; the limit is {settings.max_text_chars}",
                detail={"field": where, "chars": len(text), "max_text_chars": settings.max_text_chars},
            )
        if not text.strip():
            raise EmptyTextError(f"{where} is empty or only whitespace", detail={"field": where})
    return texts


def _text_too_long(request: ClassifyRequest, exc: EngineTextTooLongError) -> TextTooLongError:
    where = _field(request, exc.index)
    return TextTooLongError(
        f"{where} has {exc.num_tokens} tokens; the model accepts at most {exc.max_length} "
        "(send truncate=true to cut it)",
        detail={"field": where, "num_tokens": exc.num_tokens, "max_length": exc.max_length},
    )
