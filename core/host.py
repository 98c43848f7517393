"""The machine this process runs on: usable cores, CPU name and instruction set, a free TCP port.

Standard library only, so every image (serving, training, load test) can use it.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Isa = Literal["avx512_vnni", "avx512", "avx2", "arm64"]
ISAS: tuple[Isa, ...] = ("avx512_vnni", "avx512", "avx2", "arm64")

ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
"""The ``/proc/cpuinfo`` flags that decide int8 speed; reports name which of them the CPU has."""


def usable_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    for line in _read_cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none).

    Args:
        cpuinfo: Contents of ``/proc/cpuinfo`` (read when ``None``); a parameter so tests can pass other CPUs.
    """
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def isa_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of ``ISA_FLAGS`` this CPU has (``/proc/cpuinfo``; a parameter so tests can pass other CPUs)."""
    flags = cpu_flags(cpuinfo)
    return {flag: flag in flags for flag in ISA_FLAGS}


def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> Isa:
    """The best int8 quantization target this CPU supports.

    Args:
        cpuinfo: Contents of ``/proc/cpuinfo`` (read when ``None``); a parameter so tests can pass other CPUs.
        machine: ``platform.machine()`` (read when ``None``).
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags(cpuinfo)
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" not in flags:
        log.warning("no AVX2 found in /proc/cpuinfo; using the avx2 quantization settings anyway")
    return "avx2"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
