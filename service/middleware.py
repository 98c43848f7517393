"""Around every request: the request id, the API key, the refusals made before the body is read, the request
metrics, one JSON log line, and the exception handler that turns any error into the one JSON error shape."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.context import RequestContext
from service.errors import (
    ErrorBody,
    ErrorResponse,
    InternalError,
    ServiceError,
    UnauthorizedError,
    error_from_exception,
    error_response,
)
from service.infer import Infer
from service.metrics import ServiceMetrics
from service.settings import Settings

logger = logging.getLogger("textclf.service")

CLASSIFY_ROUTE = "/classify"
INFO_ROUTE = "/info"
# Routes that need the API key when one is configured. The probes, /metrics, the page and /schema stay open:
# they carry no model output, and probes and Prometheus hold no key.
PROTECTED_ROUTES = frozenset({CLASSIFY_ROUTE, INFO_ROUTE})
_REQUEST_ID_MAX = 128
_REQUEST_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when short and plain (it goes into logs and headers), else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if 0 < len(candidate) <= _REQUEST_ID_MAX and set(candidate) <= _REQUEST_ID_ALLOWED:
                return candidate
            break
    return secrets.token_hex(8)


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return bytes(value)
    return None


def auth_rejection(api_key: bytes, metrics: ServiceMetrics, scope: Scope) -> UnauthorizedError | None:
    """401 unless the request carries ``Authorization: Bearer <the configured key>``; None when no key is
    configured or the key matches.

    The comparison is constant-time (``hmac.compare_digest``). Neither the key nor what the client sent goes
    into the answer, the metrics or the log; refusals are counted as ``auth_missing`` (no header, another
    scheme, no credentials) or ``auth_wrong`` (a Bearer key that does not match).
    """
    if not api_key or scope.get("method") == "OPTIONS":
        return None  # no key configured; CORS preflights carry no credentials by design
    header = _authorization(scope)
    scheme, _, credentials = (header or b"").strip().partition(b" ")
    credentials = credentials.strip()
    if header is None or not header.strip():
        message = "this service needs an API key: send the header `Authorization: Bearer <key>`"
    elif scheme.lower() != b"bearer":
        message = "the Authorization header must use the Bearer scheme: `Authorization: Bearer <key>`"
    elif not credentials:
        message = "the Authorization header holds no key: send `Authorization: Bearer <key>`"
    elif hmac.compare_digest(credentials, api_key):
        return None
    else:
        metrics.reject("auth_wrong")
        return UnauthorizedError("the API key is not valid", detail=None, invalid_token=True)
    metrics.reject("auth_missing")
    return UnauthorizedError(message, detail=None)


async def send_error(send: Send, error: ServiceError) -> None:
    """Answer ``error`` in the one JSON error shape straight on the ASGI channel (no body read)."""
    body = msgspec.json.encode(
        ErrorResponse(error=ErrorBody(type=error.type, message=error.message, detail=error.detail))
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.response_headers().items()
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def request_middleware(app: ASGIApp, *, infer: Infer, metrics: ServiceMetrics, settings: Settings) -> ASGIApp:
    """Per routed request: a ``RequestContext``, X-Request-ID and X-Total-Time, the in-flight gauge, request
    metrics, one JSON log line; for the protected routes the API key, and for POST /classify a permit from
    ``Infer`` (both refused before the body is read).

    Litestar runs route middleware after routing, so unknown paths never get here and never add a series.
    """
    api_key = settings.api_key.encode("ascii")

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(request_id=_request_id(scope), arrived_at=started)
        context.attach(scope)
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "GET")
        status = 500
        classify = route == CLASSIFY_ROUTE and method == "POST"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Request-ID"] = context.request_id
                headers["X-Total-Time"] = f"{(time.perf_counter() - started) * 1000:.3f}"
            await send(message)

        metrics.in_flight.inc()
        # The key is checked first: a stranger learns nothing, not even whether the queue is full.
        refusal: ServiceError | None = (
            auth_rejection(api_key, metrics, scope) if route in PROTECTED_ROUTES else None
        )
        if refusal is None and classify:
            try:
                infer.acquire_permit()
            except ServiceError as exc:
                refusal = exc
        permitted = classify and refusal is None
        try:
            if refusal is not None:
                metrics.errors.labels(type=refusal.type).inc()
                context.error_type = refusal.type
                await send_error(send_with_headers, refusal)
            else:
                await app(scope, receive, send_with_headers)
        finally:
            metrics.in_flight.dec()
            if permitted:
                infer.release_permit()
            duration = time.perf_counter() - started
            metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            metrics.request_duration.labels(route=route, method=method).observe(duration)
            fields: dict[str, Any] = {
                "event": "request",
                "request_id": context.request_id,
                "route": route,
                "method": method,
                "status": status,
                "duration_seconds": round(duration, 6),
                **context.log_fields(with_texts=settings.log_request_text),
            }
            logger.info("request", extra={"fields": fields})

    return middleware


def exception_handler(
    metrics: ServiceMetrics, max_body_bytes: int
) -> Callable[[Request[Any, Any, Any], Exception], Response[ErrorResponse]]:
    """The app's handler for every exception: the one JSON error shape, counted by type.

    Unrouted requests (404/405) skip the request middleware, so their log line is written here.
    """

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
        error = error_from_exception(exc, max_body_bytes)
        metrics.errors.labels(type=error.type).inc()
        context = RequestContext.find(request.scope)
        if context is not None:
            context.error_type = error.type
            request_id = context.request_id
        else:
            request_id = _request_id(request.scope)
            logger.info(
                "request",
                extra={
                    "fields": {
                        "event": "request",
                        "request_id": request_id,
                        "route": "unmatched",
                        "method": request.scope.get("method"),
                        "status": error.status_code,
                        "error_type": error.type,
                    }
                },
            )
        if isinstance(error, InternalError):
            logger.error(
                "unhandled error",
                exc_info=exc,
                extra={"fields": {"event": "error", "request_id": request_id, "cause": repr(exc)}},
            )
        return error_response(error, request_id)

    return handle
