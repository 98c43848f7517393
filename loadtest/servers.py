"""The servers the benchmark compares, and the CPU they use.

Each runs as a ``core.process.ServerProcess`` on a free port on 127.0.0.1: our service
(``core.process.service_command``), the PyTorch baseline (``baseline_command``) and Infinity
(``loadtest.infinity.server_command``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import psutil

from core.process import ServerProcess


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


def cpu_seconds(server: ServerProcess) -> float:
    """User + system CPU of the server and its live children (worker processes) so far."""
    assert server.process is not None
    try:
        root = psutil.Process(server.process.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0
