"""The API key the load tools send, read from the same settings the service reads.

When the service runs with ``TEXTCLF_API_KEY`` (or ``TEXTCLF_API_KEY_FILE``, a path to a file holding the
key, as Docker and Kubernetes secrets are mounted), ``POST /classify`` and ``/info`` need
``Authorization: Bearer <key>``. Locust (``make loadtest``) and the benchmark (``make bench``) send that
header when the same variable is set in their environment, so one ``export TEXTCLF_API_KEY=...`` covers the
service and its load tests. The key itself is never printed: only where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

API_KEY_ENV = "TEXTCLF_API_KEY"
API_KEY_FILE_ENV = "TEXTCLF_API_KEY_FILE"


class ApiKeyError(ValueError):
    """Both variables are set, or ``TEXTCLF_API_KEY_FILE`` names a file that is unreadable or empty."""


@dataclass(frozen=True)
class ApiKey:
    """A configured key and where it was read from (for messages; ``repr`` hides the key)."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"ApiKey(source={self.source!r})"

    def headers(self) -> dict[str, str]:
        """The request header that carries the key."""
        return {"Authorization": f"Bearer {self.value}"}


def api_key_from_env(environ: Mapping[str, str] | None = None) -> ApiKey | None:
    """The key from ``TEXTCLF_API_KEY`` or from the file ``TEXTCLF_API_KEY_FILE`` names, else ``None``.

    The same rules as the service's settings: surrounding whitespace is stripped (a secret file usually ends
    with a newline), an empty variable counts as not set, and setting both is an error.

    Raises:
        ApiKeyError: both are set, or the key file is missing, unreadable or empty (a run would only collect
            401s).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(API_KEY_ENV, "").strip()
    file_name = environ.get(API_KEY_FILE_ENV, "").strip()
    if value and file_name:
        raise ApiKeyError(f"set one of {API_KEY_ENV} or {API_KEY_FILE_ENV}, not both")
    if value:
        return ApiKey(value, API_KEY_ENV)
    if not file_name:
        return None
    try:
        value = Path(file_name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeyError(f"{API_KEY_FILE_ENV}={file_name}: cannot read the key file ({exc})") from exc
    if not value:
        raise ApiKeyError(f"{API_KEY_FILE_ENV}={file_name}: the key file is empty")
    return ApiKey(value, f"{API_KEY_FILE_ENV} ({file_name})")


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` when a key is configured, else ``{}``."""
    key = api_key_from_env(environ)
    return key.headers() if key else {}
