"""JSON-lines logging: one object per line on stderr, for the service and for uvicorn.

Records carry their structured fields in ``extra={"fields": {...}}``. Request texts are never put in a record
unless the ``log_request_text`` setting asks for it (the request log line adds them then).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_configured_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", **fields}``, plus ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger (root, uvicorn, textclf) to stderr as JSON lines. Idempotent."""
    global _configured_handler  # noqa: PLW0603 - one handler per process, replaced on reconfiguration
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    _configured_handler = handler
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's access log would duplicate our per-request line, without the request id.
    logging.getLogger("uvicorn.access").disabled = True


def log_event(
    logger: logging.Logger, event: str, message: str, level: int = logging.INFO, **fields: Any
) -> None:
    logger.log(level, message, extra={"fields": {"event": event, **fields}})
