"""HTTP handlers: /classify, /health/*, /info, /metrics and the web page. No ONNX Runtime in here: the
handlers talk to the ``Engine`` Protocol and the ``Batcher`` held by ``Runtime`` in the app state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Controller, Request, Response, get, post, route
from litestar.datastructures import CacheControlHeader, State
from litestar.enums import HttpMethod, MediaType
from litestar.exceptions import NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter
from litestar.response import File
from msgspec import UNSET

from core.bundle import Manifest
from core.engine import Engine, Prediction
from core.engine import TextTooLongError as EngineTextTooLongError
from service.batcher import Batcher
from service.errors import (
    DeadlineExceededError,
    EmptyTextError,
    ErrorResponse,
    InvalidJSONError,
    NotReadyError,
    QueueFullError,
    RequestValidationError,
    ShuttingDownError,
    TextTooLongError,
    TooManyCharactersError,
    TooManyItemsError,
)
from service.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from service.schemas import ClassifyRequest, ClassifyResponse, Health, Info, ModelRef, Result
from service.settings import Settings
from service.text import lone_surrogate_escapes, replace_lone_surrogate_escapes

REQUEST_FIELDS_HINT = (
    "send `text` (a string) or `texts` (a list of strings), optionally with `top_k`, `return_all_scores` "
    "and `truncate`"
)
JSON_HINT = (
    'send a JSON object such as {"text": "..."} with the header content-type: application/json '
    "(curl: -H 'content-type: application/json' -d '{\"text\": \"...\"}')"
)
# Tokenize inline below this many characters (microseconds); in a thread above it, so a long request does
# not stall the event loop for everyone else.
_INLINE_TOKENIZE_CHARS = 4096
STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_ASSETS_PATH = "/schema/assets"
# The only Swagger UI files the page loads (swagger-ui-bundle-v2 ships them; no CDN, works offline).
SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@dataclass
class Runtime:
    """Everything the handlers share for one app: settings, metrics, and the model once it is loaded."""

    settings: Settings
    metrics: ServiceMetrics
    status: str = "loading"
    """``loading`` -> ``ok`` (ready) or ``not_ready`` (bad bundle); ``shutting_down`` after SIGTERM."""
    reason: str | None = "loading the model bundle"
    engine: Engine | None = None
    batcher: Batcher | None = None
    manifest: Manifest | None = None
    page: bytes = b""
    api_key: bytes = field(default=b"", repr=False)
    """The configured API key (empty: no key), compared in constant time by the request middleware."""
    announce: bool = False
    """Print one plain line with the URL on stderr once the model is ready (``python -m service``)."""
    classify_in_flight: int = 0
    """POST /classify requests let in by the request middleware and not finished (``max_in_flight``)."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.status == "ok"


def runtime(state: State) -> Runtime:
    value = state["runtime"]
    assert isinstance(value, Runtime)
    return value


def _error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorResponse, description=description, generate_examples=False)


CLASSIFY_RESPONSES = {
    400: _error_spec(
        "Bad input: invalid_json (not JSON or not UTF-8), validation_error (missing/unknown field, wrong "
        "type, text and texts both or neither), empty_text (empty or only whitespace), too_many_items, "
        "too_many_characters. Any other text is classified (control characters, zero-width marks, any "
        "script); a lone surrogate escape becomes U+FFFD."
    ),
    413: _error_spec("body_too_large: the body is over max_body_bytes (the limit is in the message)."),
    422: _error_spec("text_too_long: truncate=false and a text has more tokens than the model's max_length."),
    429: _error_spec(
        "queue_full (queue_size requests admitted) or overloaded (max_in_flight requests in flight): "
        "refused before the body is read; retry after Retry-After seconds."
    ),
    503: _error_spec("not_ready, deadline_exceeded or shutting_down."),
}


def decode_request(body: bytes, content_type: str = "application/json") -> ClassifyRequest:
    """The one strict decode of a /classify body (msgspec, no coercion: ``"3"`` for a number or ``"false"``
    for a boolean is a 400, unknown fields are refused).

    A ``\\uD800``-``\\uDFFF`` escape that is not half of a surrogate pair (which msgspec refuses and no UTF-8
    text can hold) is replaced with U+FFFD and the body decoded again, so such a text is classified. Any
    content type is accepted as long as the body is JSON; when it is not, the message says how to send JSON.

    Args:
        body: The raw request body.
        content_type: The request's Content-Type header, for the hint when the body is not JSON.

    Raises:
        RequestValidationError: empty body, or JSON that does not match the request schema.
        InvalidJSONError: not JSON or not UTF-8.
    """
    if not body.strip():
        raise RequestValidationError(
            "the request body is empty; send a JSON object with `text` or `texts`", detail=None
        )
    try:
        return msgspec.json.decode(body, type=ClassifyRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "unknown field" in message:
            message = f"{message}; {REQUEST_FIELDS_HINT}"
        raise RequestValidationError(message, detail={"reason": str(exc)}) from None
    except UnicodeDecodeError:
        raise _utf8_error(body) from None
    except msgspec.DecodeError as exc:
        if "out of range" in str(exc).lower():
            raise RequestValidationError(
                f"a number is out of range: {exc}", detail={"reason": str(exc)}
            ) from None
        lone = lone_surrogate_escapes(body)
        if lone:
            return decode_request(replace_lone_surrogate_escapes(body, lone), content_type)
        raise InvalidJSONError(
            f"the request body is not valid JSON ({exc}){_json_hint(content_type)}",
            detail={"reason": str(exc), "content_type": content_type or None},
        ) from None


def _json_hint(content_type: str) -> str:
    """Why a body that is not JSON may have been sent that way, and how to send JSON."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return f"; the body was sent as a form (curl's default for -d without a content type): {JSON_HINT}"
    if media_type != "application/json":
        return f"; {JSON_HINT}"
    return ""


def _utf8_error(body: bytes) -> InvalidJSONError:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidJSONError(
            f"the request body is not valid UTF-8: {exc.reason} at byte {exc.start}",
            detail={"reason": "invalid_utf8", "position": exc.start},
        )
    return InvalidJSONError("the request body is not valid UTF-8")


def validate_texts(data: ClassifyRequest, settings: Settings) -> list[str]:
    """The request's texts, or the first problem with them as a 4xx error naming the item.

    Only an empty or whitespace-only text, or one over ``max_text_chars``, is refused: control characters,
    zero-width and bidi marks, any script and emoji are classified (the tokenizer's normalizer decides what
    reaches the model; see ``service/text.py``).
    """
    if (data.text is UNSET) == (data.texts is UNSET):
        raise RequestValidationError(
            "send exactly one of `text` (a string) or `texts` (a list of strings)",
            detail={"fields": ["text", "texts"]},
        )
    texts = [data.text] if isinstance(data.text, str) else list(data.texts or [])
    if not texts:
        raise RequestValidationError("`texts` must hold at least one text", detail={"field": "texts"})
    if len(texts) > settings.max_items:
        raise TooManyItemsError(
            f"{len(texts)} texts in one request; the limit is {settings.max_items}",
            detail={"count": len(texts), "max_items": settings.max_items},
        )
    for index, text in enumerate(texts):
        where = "text" if isinstance(data.text, str) else f"texts[{index}]"
        if len(text) > settings.max_text_chars:
            raise TooManyCharactersError(
                f"{where} has {len(text)} characters; the limit is {settings.max_text_chars}",
                detail={"field": where, "chars": len(text), "max_text_chars": settings.max_text_chars},
            )
        if not text.strip():
            raise EmptyTextError(f"{where} is empty or only whitespace", detail={"field": where})
    return texts


def build_results(
    *,
    predictions: list[Prediction],
    tokenized_lengths: list[tuple[int, bool]],
    labels: list[str],
    multi_label: bool,
    top_k: int | None,
    return_all_scores: bool,
) -> list[Result]:
    results: list[Result] = []
    for prediction, (num_tokens, truncated) in zip(predictions, tokenized_lengths, strict=True):
        scores: dict[str, float] | None = None
        row = np.asarray(prediction.scores, dtype=np.float64)
        if return_all_scores:
            scores = {label: float(row[i]) for i, label in enumerate(labels)}
        elif top_k is not None:
            order = np.argsort(-row, kind="stable")[: min(top_k, len(labels))]
            scores = {labels[i]: float(row[i]) for i in order}
        results.append(
            Result(
                label=prediction.label,
                score=float(prediction.score),
                truncated=truncated,
                num_tokens=num_tokens,
                scores=scores,
                labels=list(prediction.labels) if multi_label else None,
            )
        )
    return results


def _cancelled_by_shutdown(metrics: ServiceMetrics) -> ShuttingDownError:
    """uvicorn cancels the requests still running when its graceful-shutdown timeout ends. Answer those 503
    shutting_down (retry elsewhere), not uvicorn's plain 500 with a traceback, and drop their queued texts so
    the batcher does not compute them for nobody while the process is trying to exit."""
    metrics.rejections.labels(reason="shutting_down").inc()
    return ShuttingDownError("the service shut down before this request finished; retry on another instance")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


class ClassifyController(Controller):
    path = "/classify"
    tags = ["classify"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/",
        status_code=200,
        summary="Classify one text or a list of texts",
        description=(
            "Send `text` or `texts`. Timing headers (milliseconds): X-Tokenization-Time, X-Queue-Time, "
            "X-Inference-Time, X-Total-Time; X-Request-ID is echoed or generated."
        ),
        responses=CLASSIFY_RESPONSES,
    )
    async def classify(self, state: State, request: Request[Any, Any, Any]) -> Response[ClassifyResponse]:
        rt = runtime(state)
        settings = rt.settings
        metrics = rt.metrics
        # No `data` parameter: Litestar would decode the body a first, lenient time. The body is decoded
        # once, strictly; its OpenAPI schema is set by ``service.schemas.document_classify_request``.
        data = decode_request(await request.body(), request.headers.get("content-type", ""))
        if not rt.ready or rt.engine is None or rt.batcher is None or rt.manifest is None:
            if rt.status == "shutting_down":
                metrics.rejections.labels(reason="shutting_down").inc()
                raise ShuttingDownError("the service is shutting down")
            metrics.rejections.labels(reason="not_ready").inc()
            raise NotReadyError(f"the model is not ready: {rt.reason}", detail={"reason": rt.reason})
        texts = validate_texts(data, settings)
        request.scope["state"]["num_texts"] = len(texts)
        if settings.log_request_text:
            request.scope["state"]["texts"] = texts
        engine, batcher, manifest = rt.engine, rt.batcher, rt.manifest

        # The deadline counts from the request's arrival (set by the request middleware before the body
        # was read), so time spent in the socket, the body and the event loop counts too.
        arrived_at = request.scope["state"].get("arrived_at")
        if arrived_at is not None and batcher.clock() >= arrived_at + settings.request_deadline_seconds:
            metrics.rejections.labels(reason="deadline").inc()
            raise DeadlineExceededError(
                f"no answer within the {settings.request_deadline_seconds} s request deadline",
                detail={"request_deadline_seconds": settings.request_deadline_seconds},
            )
        try:
            job = batcher.admit(settings.request_deadline_seconds, arrived_at=arrived_at)
        except QueueFullError:
            metrics.rejections.labels(reason="queue_full").inc()
            raise
        except ShuttingDownError:
            metrics.rejections.labels(reason="shutting_down").inc()
            raise

        started = time.perf_counter()
        try:
            if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
                tokenized = engine.tokenize(texts, truncate=data.truncate)
            else:
                tokenized = await asyncio.to_thread(engine.tokenize, texts, data.truncate)
        except EngineTextTooLongError as exc:
            batcher.release(job)
            where = "text" if isinstance(data.text, str) else f"texts[{exc.index}]"
            raise TextTooLongError(
                f"{where} has {exc.num_tokens} tokens; the model accepts at most {exc.max_length} "
                "(send truncate=true to cut it)",
                detail={"field": where, "num_tokens": exc.num_tokens, "max_length": exc.max_length},
            ) from exc
        except asyncio.CancelledError:
            batcher.release(job)
            raise _cancelled_by_shutdown(metrics) from None
        except BaseException:
            batcher.release(job)
            raise
        tokenization_seconds = time.perf_counter() - started
        metrics.tokenization_duration.observe(tokenization_seconds)
        for item in tokenized:
            metrics.input_tokens.observe(item.num_tokens)
            if item.truncated:
                metrics.truncated.inc()

        batcher.submit(job, tokenized)
        remaining = job.deadline - batcher.clock()
        try:
            result = await asyncio.wait_for(asyncio.shield(job.future), timeout=max(remaining, 0.0))
        except TimeoutError:
            job.abandon()
            metrics.rejections.labels(reason="deadline").inc()
            raise DeadlineExceededError(
                f"no answer within the {settings.request_deadline_seconds} s request deadline",
                detail={"request_deadline_seconds": settings.request_deadline_seconds},
            ) from None
        except asyncio.CancelledError:
            job.abandon()
            raise _cancelled_by_shutdown(metrics) from None
        request.scope["state"]["batch_size"] = result.batch_size

        predictions = engine.postprocess(result.scores)
        metrics.texts.inc(len(predictions))
        for prediction in predictions:
            metrics.predictions.labels(label=prediction.label).inc()
            metrics.prediction_score.labels(label=prediction.label).observe(prediction.score)
        results = build_results(
            predictions=predictions,
            tokenized_lengths=[(item.num_tokens, item.truncated) for item in tokenized],
            labels=list(manifest.labels),
            multi_label=manifest.problem_type == "multi_label",
            top_k=data.top_k,
            return_all_scores=data.return_all_scores,
        )
        request_id = str(request.scope["state"].get("request_id", ""))
        return Response(
            ClassifyResponse(
                results=results,
                model=ModelRef(name=manifest.name, version=manifest.version),
                request_id=request_id,
            ),
            headers={
                "X-Tokenization-Time": _ms(tokenization_seconds),
                "X-Queue-Time": _ms(result.queue_seconds),
                "X-Inference-Time": _ms(result.inference_seconds),
            },
        )


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get("/live", summary="The process is up", responses={})
    async def live(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        summary="200 once the bundle is verified and warmed up; 503 with the reason otherwise",
        responses={503: ResponseSpec(data_container=Health, description="Not ready, with the reason.")},
    )
    async def ready(self, state: State) -> Response[Health]:
        rt = runtime(state)
        if rt.ready:
            return Response(Health(status="ok"), status_code=200)
        return Response(
            Health(status=rt.status, reason=rt.reason), status_code=503, headers={"Retry-After": "5"}
        )


@get(
    "/info",
    summary="The model (manifest's public part) and the active limits",
    tags=["info"],
    responses={503: _error_spec("not_ready: no model loaded.")},
)
async def info(state: State) -> Info:
    rt = runtime(state)
    manifest = rt.manifest
    if manifest is None:
        raise NotReadyError(f"no model loaded: {rt.reason}", detail={"reason": rt.reason})
    return Info(
        name=manifest.name,
        version=manifest.version,
        base_model=manifest.base_model,
        task=manifest.task,
        problem_type=manifest.problem_type,
        labels=list(manifest.labels),
        thresholds=manifest.thresholds,
        max_length=manifest.max_length,
        quantization={
            "mode": manifest.quantization.mode,
            "isa": manifest.quantization.isa,
            "per_channel": manifest.quantization.per_channel,
            # False only for a bundle exported with --allow-batch-variant: a text's scores then depend on
            # the other texts of its batch (see export/quantize.py).
            "batch_invariant": manifest.quantization.batch_invariant,
        },
        versions=dict(manifest.versions),
        degraded=manifest.degraded,
        created_at=manifest.created_at,
        limits=rt.settings.public(),
    )


# Litestar appends "; charset=utf-8" to text/* media types itself; without this it would appear twice.
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


@get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    tags=["metrics"],
    include_in_schema=True,
    media_type=METRICS_MEDIA_TYPE,
)
async def metrics_endpoint(state: State) -> Response[bytes]:
    return Response(runtime(state).metrics.exposition(), media_type=METRICS_MEDIA_TYPE)


@route(
    "/",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="A page to try the classifier",
    tags=["page"],
    include_in_schema=False,
    media_type=MediaType.HTML,
)
async def page(state: State) -> Response[bytes]:
    # MediaType.HTML: Litestar adds "; charset=utf-8" to text/* itself (once).
    return Response(runtime(state).page, media_type=MediaType.HTML)


def swagger_ui_dir() -> Path:
    """The Swagger UI distribution inside the installed ``swagger-ui-bundle-v2`` package."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(swagger_ui_path)


def swagger_ui_version() -> str:
    """The shipped Swagger UI version, from its folder name (``vendor/swagger-ui-5.31.0``)."""
    return swagger_ui_dir().name.removeprefix("swagger-ui-")


@get(
    f"{SWAGGER_ASSETS_PATH}/{{name:str}}",
    include_in_schema=False,
    cache_control=CacheControlHeader(max_age=86400, public=True),
)
async def swagger_asset(name: Annotated[str, PathParameter()]) -> File:
    media_type = SWAGGER_ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no Swagger UI asset {name!r}")
    return File(swagger_ui_dir() / name, media_type=media_type, content_disposition_type="inline")


__all__ = [
    "ClassifyController",
    "HealthController",
    "Runtime",
    "info",
    "metrics_endpoint",
    "page",
    "runtime",
    "swagger_asset",
]
