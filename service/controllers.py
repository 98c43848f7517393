"""HTTP handlers: /classify, /health/*, /info, /metrics and the web page. They parse and shape; ``Infer``
does the rest. No ONNX Runtime in here. What a handler needs comes as a typed dependency (``create_app``
provides ``infer``, ``context``, ``settings``, ``metrics`` and ``page_html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Controller, Request, Response, get, post, route
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.enums import HttpMethod, MediaType
from litestar.exceptions import NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter
from litestar.response import File

from service.context import RequestContext
from service.errors import ErrorResponse, InvalidJSONError, NotReadyError, RequestValidationError
from service.infer import Classified, Infer
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
STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_ASSETS_PATH = "/schema/assets"
# The only Swagger UI files the page loads (swagger-ui-bundle-v2 ships them; no CDN, works offline).
SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


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


def build_results(outcome: Classified, *, top_k: int | None, return_all_scores: bool) -> list[Result]:
    """One ``Result`` per text, with the per-label scores the request asked for."""
    manifest = outcome.manifest
    labels = list(manifest.labels)
    multi_label = manifest.problem_type == "multi_label"
    results: list[Result] = []
    for prediction, item in zip(outcome.predictions, outcome.tokenized, strict=True):
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
                truncated=item.truncated,
                num_tokens=item.num_tokens,
                scores=scores,
                labels=list(prediction.labels) if multi_label else None,
            )
        )
    return results


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
    async def classify(
        self,
        request: Request[Any, Any, Any],
        infer: NamedDependency[Infer],
        context: NamedDependency[RequestContext],
    ) -> Response[ClassifyResponse]:
        # No `data` parameter: Litestar would decode the body a first, lenient time. The body is decoded
        # once, strictly; its OpenAPI schema is set by ``service.app.document_classify_request``.
        data = decode_request(await request.body(), request.headers.get("content-type", ""))
        outcome = await infer.classify(data, context)
        manifest = outcome.manifest
        return Response(
            ClassifyResponse(
                results=build_results(outcome, top_k=data.top_k, return_all_scores=data.return_all_scores),
                model=ModelRef(name=manifest.name, version=manifest.version),
                request_id=context.request_id,
            ),
            headers={
                "X-Tokenization-Time": _ms(outcome.tokenization_seconds),
                "X-Queue-Time": _ms(outcome.queue_seconds),
                "X-Inference-Time": _ms(outcome.inference_seconds),
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
    async def ready(self, infer: NamedDependency[Infer]) -> Response[Health]:
        if infer.ready:
            return Response(Health(status="ok"), status_code=200)
        return Response(
            Health(status=infer.status, reason=infer.reason), status_code=503, headers={"Retry-After": "5"}
        )


@get(
    "/info",
    summary="The model (manifest's public part) and the active limits",
    tags=["info"],
    responses={503: _error_spec("not_ready: no model loaded.")},
)
async def info(infer: NamedDependency[Infer], settings: NamedDependency[Settings]) -> Info:
    manifest = infer.manifest
    if manifest is None:
        raise NotReadyError(f"no model loaded: {infer.reason}", detail={"reason": infer.reason})
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
        limits=settings.public(),
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
async def metrics_endpoint(metrics: NamedDependency[ServiceMetrics]) -> Response[bytes]:
    return Response(metrics.exposition(), media_type=METRICS_MEDIA_TYPE)


@route(
    "/",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="A page to try the classifier",
    tags=["page"],
    include_in_schema=False,
    media_type=MediaType.HTML,
)
async def page(page_html: NamedDependency[bytes]) -> Response[bytes]:
    # MediaType.HTML: Litestar adds "; charset=utf-8" to text/* itself (once).
    return Response(page_html, media_type=MediaType.HTML)


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
    "info",
    "metrics_endpoint",
    "page",
    "swagger_asset",
]
