"""Helpers for the fuzz tests: in-process apps that are ready before the first request, and counts of what
they answered."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.types import Message, Receive, Scope, Send

from service.app import create_app
from service.infer import Infer
from service.settings import Settings

# `make fuzz` sets FUZZ_EXAMPLES=5000; `make test` uses the default.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
READY_TIMEOUT_S = 60.0


class ReadyApp:
    """An ASGI wrapper around the service app that

    - finishes lifespan start-up only once the model is loaded (the service loads it in the background, so a
      client that starts the lifespan, like schemathesis, would otherwise meet 503 ``loading``), and
    - counts every response status by (method, route), so a test can check the fuzzing reached the model.
    """

    def __init__(self, app: Litestar) -> None:
        self.app = app
        infer = app.state["infer"]
        assert isinstance(infer, Infer)
        self.infer = infer
        self.statuses: Counter[tuple[str, str, int]] = Counter()
        self.startups = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses[(scope["method"], scope["path"], message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.startups += 1
                deadline = time.monotonic() + READY_TIMEOUT_S
                # "shutting_down" too: schemathesis ends the lifespan after every test item and starts it
                # again on the next request, so the model loads again from that state.
                while self.infer.status in {"loading", "shutting_down"} and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            await send(message)

        return lifespan_send

    def count(self, method: str, path: str, status_range: range) -> int:
        return sum(
            n
            for (m, p, status), n in self.statuses.items()
            if m == method and p == path and status in status_range
        )


def ready_app(bundle_dir: Path, **settings: Any) -> ReadyApp:
    return ReadyApp(create_app(Settings(model_dir=bundle_dir, **settings)))


class LateApp:
    """An ASGI app whose target is chosen later (by a fixture), so a module-level schemathesis schema can be
    bound to an app built on a session fixture's bundle. Requests before ``target`` is set fail loudly."""

    def __init__(self) -> None:
        self.target: ReadyApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.target is None:
            raise RuntimeError("LateApp.target is not set: use the fixture that binds it")
        await self.target(scope, receive, send)


def openapi_schema(**settings: Any) -> dict[str, Any]:
    """The service's OpenAPI document, without starting anything (it depends on the routes and settings only;
    with ``api_key`` it declares the Bearer scheme and the 401s)."""
    return create_app(Settings(**settings)).openapi_schema.to_schema()
