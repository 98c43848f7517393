"""Closed-loop HTTP load with wrk (the benchmark's load generator).

wrk is a small C event loop: on a 2-core machine shared with the server it takes far less CPU than Locust, so
it disturbs the measurement less. Each of ``connections`` connections sends its next request as soon as the
previous answer arrives (closed loop); ``loadtest/wrk_post.lua`` cycles through the request bodies and writes
a JSON summary. The CPU wrk used is read from the kernel's accounting of the finished child process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).with_name("wrk_post.lua")


class WrkError(RuntimeError):
    """wrk is missing, failed, or wrote no summary."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: successful requests per second and latency percentiles in milliseconds."""

    connections: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    """wrk's error counts: connect, read, write, timeout, and status (answers that were not 2xx/3xx)."""
    throughput_rps: float
    """Answered requests per second, errors excluded."""
    latency_ms: dict[str, float]
    """mean, p50, p90, p95, p99, p99.9, max."""
    cpu_seconds: float
    """CPU time (user + system) the wrk process used."""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def write_bodies(bodies: Iterable[object], path: Path) -> Path:
    """One compact JSON body per line (newlines inside texts are escaped by the JSON encoder)."""
    path.write_text("".join(json.dumps(body, ensure_ascii=False) + "\n" for body in bodies), encoding="utf-8")
    return path


def parse_summary(raw: Any, connections: int) -> WrkResult:
    """Turn the Lua script's summary into a ``WrkResult`` (cpu_seconds filled in by ``run_wrk``)."""
    errors = {str(k): int(v) for k, v in raw["errors"].items()}
    requests = int(raw["requests"])
    duration_s = int(raw["duration_us"]) / 1e6
    # Connect/read/write/timeout errors are not counted in wrk's requests; status errors are.
    answered = max(0, requests - errors.get("status", 0))
    latency = {key: float(value) / 1000.0 for key, value in raw["latency_us"].items()}
    return WrkResult(
        connections=connections,
        duration_s=duration_s,
        requests=requests,
        errors=errors,
        throughput_rps=answered / duration_s if duration_s > 0 else 0.0,
        latency_ms=latency,
        cpu_seconds=0.0,
    )


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    bodies_file: Path,
    *,
    threads: int = 1,
    timeout_s: float = 60.0,
    authorization: str | None = None,
) -> WrkResult:
    """Drive ``url`` (e.g. ``http://127.0.0.1:8000/classify``) for ``duration_s`` seconds.

    Args:
        url: Full URL; its path is where bodies are POSTed.
        connections: Concurrent connections, each with one request in flight (the closed-loop concurrency).
        duration_s: Seconds to run.
        bodies_file: JSON bodies, one per line (``write_bodies``).
        threads: wrk threads; one is enough for the rates here and leaves more CPU to the server.
        timeout_s: A request slower than this counts as a timeout and drops out of the latency figures, so
            it is set far above any latency we expect (wrk's 2 s default would hide a slow baseline's tail).
        authorization: ``Authorization`` header value for every request (``"Bearer <key>"``), or ``None``.
            It reaches wrk through its environment, never its command line (which ``ps`` shows).
    """
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        result_file = Path(tmp) / "summary.json"
        env = {**os.environ, "WRK_BODIES": str(bodies_file), "WRK_RESULT": str(result_file)}
        env.pop("WRK_AUTHORIZATION", None)
        if authorization:
            env["WRK_AUTHORIZATION"] = authorization
        command = [
            wrk_binary(),
            f"--threads={max(1, min(threads, connections))}",
            f"--connections={connections}",
            f"--duration={max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            f"--script={LUA_SCRIPT}",
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if completed.returncode != 0 or not result_file.is_file():
            output = completed.stderr.strip() or completed.stdout.strip()
            raise WrkError(f"wrk failed (exit {completed.returncode}): {output}")
        result = parse_summary(json.loads(result_file.read_text()), connections)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(**{**result.__dict__, "cpu_seconds": cpu})
