"""What one routed request carries from the request middleware to the handler, ``Infer`` and the exception
handler, and back into its log line: one typed object, not loose keys in the ASGI scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.types import Scope

# Litestar keeps ``scope["state"]`` per request (``request.state``); the context is the one entry the service
# puts there.
_KEY = "textclf.request"


@dataclass(slots=True)
class RequestContext:
    """One request: its id and arrival time (set by the request middleware), and what the log line reports."""

    request_id: str
    arrived_at: float
    """``time.perf_counter()`` at arrival, before the body was read; the request deadline counts from it."""
    num_texts: int | None = None
    texts: list[str] | None = None
    """The validated texts; the log line shows them only with ``log_request_text``."""
    batch_size: int | None = None
    """Largest batch any of the request's texts ran in."""
    error_type: str | None = None

    def attach(self, scope: Scope) -> None:
        scope.setdefault("state", {})[_KEY] = self

    @staticmethod
    def find(scope: Scope) -> RequestContext | None:
        """The context the request middleware attached; None for requests it never saw (unrouted: 404/405)."""
        context = scope.get("state", {}).get(_KEY)
        return context if isinstance(context, RequestContext) else None

    def log_fields(self, *, with_texts: bool) -> dict[str, Any]:
        """The request log line's fields that this request has, in the line's order."""
        fields: dict[str, Any] = {}
        for key in ("num_texts", "batch_size", "error_type"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = value
        if with_texts and self.texts is not None:
            fields["texts"] = self.texts
        return fields
