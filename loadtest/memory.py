"""The server's resident memory (RSS), sampled in the background during a soak or overload run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class RssSampler:
    """Samples one process's resident memory (bytes) every ``interval_s`` in the background."""

    pid: int
    interval_s: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def now(self) -> int:
        """RSS of the process and its children (worker processes), in bytes."""
        root = psutil.Process(self.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.samples.append((time.monotonic(), self.now()))
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(self, since: float = 0.0) -> int:
        values = [rss for at, rss in self.samples if at >= since]
        return max(values) if values else 0


def pid_listening_on(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port`` (for ``--url`` runs), if visible."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None
