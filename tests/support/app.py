"""The service app in process: built on a bundle, its lifespan run through Litestar's test client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from service.app import EngineFactory, create_app
from service.settings import Settings


def wait_until(client: TestClient[Any], status: int = 200, timeout: float = 30.0) -> None:
    """Poll /health/ready until it answers ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health/ready")
        if response.status_code == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"/health/ready stayed {response.status_code}: {response.text}")
        time.sleep(0.01)


@contextmanager
def serve(
    bundle_dir: Path,
    engine_factory: EngineFactory | None = None,
    wait_ready: bool = True,
    **settings: Any,
) -> Iterator[TestClient[Any]]:
    """A test client on a fresh app for ``bundle_dir``; waits for ready unless told not to."""
    app = create_app(Settings(model_dir=bundle_dir, **settings), engine_factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        if wait_ready:
            wait_until(client)
        yield client


def rejection_count(client: TestClient[Any], reason: str) -> float:
    """The app's ``textclf_rejections_total`` for ``reason``, read from its /metrics."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'textclf_rejections_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(reason)


def http_scope(
    path: str, headers: list[tuple[bytes, bytes]], method: str = "POST", **extra: Any
) -> dict[str, Any]:
    """An ASGI HTTP scope for a request sent straight into an app, with no test client in between (to control
    when the body arrives, or that it never does)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        **extra,
    }
