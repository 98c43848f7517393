"""Every failure a client can cause, its HTTP status, and the one JSON shape all errors share::

    {"error": {"type": "too_many_items", "message": "...", "detail": {...} | null}}

Domain errors are ``ServiceError`` subclasses. Litestar's own exceptions (404, 405, 413, a client that
disconnects mid-body) are translated in ``error_from_exception``, the one place that maps errors to statuses;
the app's exception handler (``service.middleware.exception_handler``) is registered for every exception, so
nothing leaves in Litestar's default shape or as an unexplained 500.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

# Litestar raises InternalServerException with this text when the client goes away mid-body (litestar 2.x).
_DISCONNECT_TEXT = "client disconnected"


class ErrorBody(msgspec.Struct, kw_only=True):
    """The inside of every error response."""

    type: str
    """Stable machine-readable error type, e.g. ``validation_error``, ``queue_full``."""
    message: str
    """What went wrong, for a human."""
    detail: Any = None
    """Structured context: the offending field or index, limits, counts. May be null."""


class ErrorResponse(msgspec.Struct, kw_only=True):
    """``{"error": {...}}``: the body of every 4xx and 5xx response."""

    error: ErrorBody


class ServiceError(Exception):
    """Base class: a failure with a type name, an HTTP status and a message for the client."""

    type: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def response_headers(self) -> dict[str, str]:
        return dict(self.headers)


class InvalidJSONError(ServiceError):
    """The body is not valid JSON, or not UTF-8 (RFC 8259 requires it)."""

    type = "invalid_json"
    status_code = 400


class RequestValidationError(ServiceError):
    """The JSON does not match the request schema: missing field, wrong type, unknown field, bad value."""

    type = "validation_error"
    status_code = 400


class EmptyTextError(ServiceError):
    """A text is empty or only whitespace."""

    type = "empty_text"
    status_code = 400


class TooManyItemsError(ServiceError):
    """More texts in one request than ``max_items``."""

    type = "too_many_items"
    status_code = 400


class TooManyCharactersError(ServiceError):
    """A text longer than ``max_text_chars`` characters."""

    type = "too_many_characters"
    status_code = 400


class TextTooLongError(ServiceError):
    """``truncate=false`` and a text has more tokens than the model's ``max_length``."""

    type = "text_too_long"
    status_code = 422


class BodyTooLargeError(ServiceError):
    """The body is over ``max_body_bytes``."""

    type = "body_too_large"
    status_code = 413


class UnauthorizedError(ServiceError):
    """An API key is configured and the request carries no ``Authorization: Bearer`` key, or a wrong one.

    The answer never echoes the key or the credential that was sent.
    """

    type = "unauthorized"
    status_code = 401

    def __init__(self, message: str, detail: Any = None, invalid_token: bool = False) -> None:
        super().__init__(message, detail)
        self.invalid_token = invalid_token

    def response_headers(self) -> dict[str, str]:
        # RFC 6750 section 3: a 401 names the scheme; error="invalid_token" when a token was sent and refused.
        challenge = 'Bearer realm="textclf"' + (', error="invalid_token"' if self.invalid_token else "")
        return {**super().response_headers(), "WWW-Authenticate": challenge}


class BadRequestError(ServiceError):
    """Any other client error Litestar raises (e.g. a malformed header or content type)."""

    type = "bad_request"
    status_code = 400


class NotFoundError(ServiceError):
    type = "not_found"
    status_code = 404


class MethodNotAllowedError(ServiceError):
    type = "method_not_allowed"
    status_code = 405

    def __init__(self, message: str, detail: Any = None, allow: str | None = None) -> None:
        super().__init__(message, detail)
        self.allow = allow

    def response_headers(self) -> dict[str, str]:
        # RFC 9110: a 405 must list the methods the route supports.
        return {**super().response_headers(), **({"Allow": self.allow} if self.allow else {})}


class ClientDisconnectedError(ServiceError):
    """The client went away before sending the whole body; nobody reads the answer (nginx's 499)."""

    type = "client_disconnected"
    status_code = 499


class QueueFullError(ServiceError):
    """The batcher's queue is full: retry later (``Retry-After``)."""

    type = "queue_full"
    status_code = 429
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class OverloadedError(ServiceError):
    """More POST /classify requests in flight than ``max_in_flight``: refused before the body is read."""

    type = "overloaded"
    status_code = 429
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class DeadlineExceededError(ServiceError):
    """The request was not answered within ``request_deadline_seconds``."""

    type = "deadline_exceeded"
    status_code = 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class NotReadyError(ServiceError):
    """The model is not loaded, failed its integrity check, or has not warmed up."""

    type = "not_ready"
    status_code = 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class ShuttingDownError(ServiceError):
    """The process is draining after SIGTERM and admits no new work."""

    type = "shutting_down"
    status_code = 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class InternalError(ServiceError):
    type = "internal_error"
    status_code = 500


# Every type a response can carry: metrics pre-create one series each, so no request ever adds a series.
ERROR_TYPES: tuple[str, ...] = tuple(
    cls.type
    for cls in (
        InvalidJSONError,
        RequestValidationError,
        BadRequestError,
        EmptyTextError,
        TooManyItemsError,
        TooManyCharactersError,
        TextTooLongError,
        BodyTooLargeError,
        UnauthorizedError,
        NotFoundError,
        MethodNotAllowedError,
        ClientDisconnectedError,
        QueueFullError,
        OverloadedError,
        DeadlineExceededError,
        NotReadyError,
        ShuttingDownError,
        InternalError,
    )
)


def error_from_exception(exc: Exception, max_body_bytes: int) -> ServiceError:
    """The one mapping from any exception to the error the client sees.

    Args:
        exc: What was raised while handling the request.
        max_body_bytes: The app's body limit, named in the 413 message.
    """
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotFoundException):
        return NotFoundError("no such route", detail=None)
    if isinstance(exc, MethodNotAllowedException):
        allow = (exc.headers or {}).get("allow")
        return MethodNotAllowedError("this method is not allowed on this route", detail=None, allow=allow)
    if isinstance(exc, HTTPException):
        if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
            return BodyTooLargeError(
                f"the request body is over the limit of {max_body_bytes} bytes (max_body_bytes); send fewer "
                "or shorter texts per request",
                detail={"max_body_bytes": max_body_bytes},
            )
        if exc.status_code == 500 and _DISCONNECT_TEXT in str(exc.detail):
            return ClientDisconnectedError("the client disconnected before sending the whole body")
        if 400 <= exc.status_code < 500:
            return BadRequestError(str(exc.detail))
    return InternalError("internal error; the request id is in the logs")


def error_response(error: ServiceError, request_id: str | None = None) -> Response[ErrorResponse]:
    headers = error.response_headers()
    if request_id:
        headers["X-Request-ID"] = request_id
    return Response(
        ErrorResponse(error=ErrorBody(type=error.type, message=error.message, detail=error.detail)),
        status_code=error.status_code,
        headers=headers,
        media_type="application/json",
    )
