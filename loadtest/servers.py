"""Start an HTTP server as a child process, wait until it is ready, measure its CPU, stop it cleanly.

The benchmark starts our service (``python -m service``), the PyTorch baseline and Infinity this way, each on
a free port on 127.0.0.1, with its output in a log file (a pipe nobody reads would fill and block the server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import psutil


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with the tail of its log."""


def service_command(model_dir: Path, port: int, **settings: object) -> list[str]:
    """``python -m service`` with ``--<setting> value`` for each keyword (``max_batch_size=1`` ->
    ``--max-batch-size 1``)."""
    command = [sys.executable, "-m", "service", "--model-dir", str(model_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    for name, value in settings.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def baseline_command(model_dir: Path, port: int, max_length: int) -> list[str]:
    """The PyTorch + FastAPI comparison target (``loadtest/baselines/pytorch_fastapi.py``)."""
    return [
        sys.executable,
        "-m",
        "loadtest.baselines.pytorch_fastapi",
        "--model-dir",
        str(model_dir),
        "--max-length",
        str(max_length),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


class ServerProcess:
    """A server child process. Use as a context manager: started and ready inside, stopped on exit."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        ready_path: str = "/health/ready",
        ready_timeout_s: float = 180.0,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.ready_timeout_s = ready_timeout_s
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll the ready endpoint until 200; raise if the process dies or the timeout passes."""
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"{self.name} not ready after {self.ready_timeout_s:.0f} s\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its live children (worker processes) so far."""
        assert self.process is not None
        try:
            root = psutil.Process(self.process.pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    total += times.user + times.system
            return total
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group (the server and any workers), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
