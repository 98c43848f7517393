"""The HTTP client of the soak and overload load (``loadtest.loadgen``): aiohttp, POSTing JSON to 127.0.0.1.

aiohttp rather than httpx: on a 2-core machine the client's CPU comes out of the server's share and caps the
load it can offer. Measured here with 32 concurrent keep-alive requests against a trivial server, httpx's
``AsyncClient`` took ~1.8 ms of CPU per request, aiohttp ~0.15 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
MAX_IDLE_S = 2.0
"""Keep-alive connections idle longer than this are closed, not reused. A server closes idle connections
(uvicorn at 5 s); sending on one it is closing is a race the client loses with a reset, which would count as
a dropped connection although the server did nothing wrong."""
JSON_HEADERS = {"Content-Type": "application/json"}


class ClientError(Exception):
    """No HTTP answer: the connection was refused, reset or closed early, or the answer timed out. The message
    is the underlying exception's type name."""


class HttpClient:
    """POSTs JSON bodies to one URL over keep-alive connections. Use as ``async with``.

    The connection pool has no size limit, so concurrency is bounded by the callers, never by the pool.
    """

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=MAX_IDLE_S)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send ``body``; returns (status, response body). Raises ``ClientError`` when no answer came."""
        assert self._session is not None, "use HttpClient as `async with`"
        try:
            async with self._session.post(self.url, data=body, headers=JSON_HEADERS) as response:
                return response.status, await response.read()
        except aiohttp.ClientConnectorError as exc:  # refused: name the OS error, as for any socket client
            raise ClientError(type(exc.os_error).__name__) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ClientError(type(exc).__name__) from exc


def new_client(url: str, timeout_s: float = 60.0) -> HttpClient:
    return HttpClient(url, timeout_s)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (it is, with uvicorn[standard]): less client CPU."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with the serve extra
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
