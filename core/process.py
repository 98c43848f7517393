"""Start a server as a child process, wait until it is ready, stop it: the one launcher and the one poller.

``loadtest`` (bench, soak), ``deploy.stack`` and the tests start ``python -m service``
(``core.service_command``) with ``spawn`` (or ``ServerProcess``, which holds it), and wait for readiness with
``wait_until``::

    with ServerProcess("service", service_command(bundle_dir, port), port, log_path) as server:
        ...  # /health/ready answered 200; stopped on exit (SIGTERM to its process group, then SIGKILL)

Each child runs in its own process group: a terminal's Ctrl-C reaches only the parent, which stops the
children in the order it chooses, and stopping the group also stops a server's workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"

Check = Callable[[], "str | None"]
"""A readiness check: ``None`` when ready, else what it found instead (for the error message)."""


class NotReadyError(RuntimeError):
    """A child did not become ready. ``cause``: ``exited``, ``timeout``, ``stopped`` or ``rejected``."""

    def __init__(self, cause: str, message: str, last_answer: str = "") -> None:
        super().__init__(message)
        self.cause = cause
        self.last_answer = last_answer


def spawn(
    command: list[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group; stdout and stderr go to ``log_path`` (else inherited).

    A log file rather than a pipe: a pipe nobody reads fills up and blocks the server.
    """
    if log_path is None:
        return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, bool]:
    """SIGTERM to the process group, ``timeout_s`` to exit, then SIGKILL. A leader that already exited may
    have left children (workers, a one-shot's grandchildren): they get SIGKILL.

    Returns:
        The exit code, and whether SIGKILL was needed.
    """
    if process.poll() is not None:
        signal_group(process, signal.SIGKILL)
        return process.returncode, False
    signal_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout_s), False
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        return process.wait(), True


def probe(url: str, timeout_s: float = 2.0) -> tuple[int | None, str]:
    """GET ``url``: the status (None when nothing answers) and the start of the body or the error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read(500).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(500).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def http_ok(url: str) -> Check:
    """A check: None when ``url`` answers 2xx, else what it answered."""

    def check() -> str | None:
        status, body = probe(url)
        return None if status is not None and 200 <= status < 300 else f"{status or 'no answer'}: {body}"

    return check


def service_ready(url: str) -> Check:
    """The service's ``/health/ready`` as a check. ``not_ready`` (bundle rejected) never changes, so it raises
    ``NotReadyError`` (cause ``rejected``) at once instead of waiting for the timeout."""

    def check() -> str | None:
        status, body = probe(url)
        if status == 200:
            return None
        with contextlib.suppress(ValueError, AttributeError):
            health = json.loads(body)
            if health.get("status") == "not_ready":
                reason = f"the service rejected the model bundle: {health.get('reason')}"
                raise NotReadyError("rejected", reason, body)
        return f"{status or 'no answer'}: {body}"

    return check


def wait_until(
    check: Check,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    stop: threading.Event | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll ``check`` until it returns None.

    Raises:
        NotReadyError: ``process`` exited, ``stop`` was set or ``timeout_s`` passed first; its ``last_answer``
            is what the check last found.
    """
    deadline = time.monotonic() + timeout_s
    while (problem := check()) is not None:
        if stop is not None and stop.is_set():
            raise NotReadyError("stopped", "stopped", problem)
        if process is not None and process.poll() is not None:
            raise NotReadyError("exited", f"exited with code {process.returncode}", problem)
        if time.monotonic() > deadline:
            message = f"not ready within {timeout_s:.0f} s (last answer {problem})"
            raise NotReadyError("timeout", message, problem)
        if stop is not None:
            stop.wait(interval_s)
        else:
            time.sleep(interval_s)


class ServerProcess:
    """A server child on 127.0.0.1. As a context manager: started and ready inside, stopped on exit."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
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
        return f"http://{HOST}:{self.port}"

    def start(self, *, wait: bool = True) -> ServerProcess:
        """Start the server; with ``wait``, also ``wait_ready``."""
        self.process = spawn(self.command, log_path=self.log_path, env=self.env, cwd=self.cwd)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, ready_path: str | None = None, interval_s: float = 0.25) -> None:
        """Poll ``ready_path`` until it answers 2xx.

        Raises:
            NotReadyError: The process exited or the timeout passed (the server is stopped then); the message
                ends with the tail of its log.
        """
        assert self.process is not None
        url = self.url + (ready_path or self.ready_path)
        try:
            wait_until(
                http_ok(url), timeout_s=self.ready_timeout_s, process=self.process, interval_s=interval_s
            )
        except NotReadyError as exc:
            self.stop()
            raise NotReadyError(exc.cause, f"{self.name} {exc}\n{self.log_tail()}", exc.last_answer) from None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """Stop the process group (``stop_group``). Returns the exit code (None if never started)."""
        if self.process is None:
            return None
        return stop_group(self.process, timeout_s)[0]

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
