"""The soak and overload command (``make soak``), against 127.0.0.1 only.

::

    python -m loadtest.soak --model-dir models/disaster-related            # make soak: 10 min at 50%
    python -m loadtest.soak --model-dir models/disaster-related --overload   # promise 2: 2x for 60 s
    python -m loadtest.soak --url http://127.0.0.1:8000 --duration 120     # a service already running

A soak run:

1. starts the service (``python -m service``, default settings) on a free port, unless ``--url`` is given;
2. measures its saturation throughput: a closed loop of ``--saturation-concurrency`` connections, each sending
   its next request as soon as the previous answer arrives, for ``--saturation-seconds``; saturation is the
   rate of 200 answers;
3. sends an open-loop load (a fixed arrival rate, not one that slows down when the server does) at
   ``--fraction`` x saturation for ``--duration`` seconds, split into windows of ``--window`` seconds, and
   samples the server's resident memory (RSS) twice a second;
4. checks the soak promises (docs/reliability.md, promise 5): 0 errors (every answer 200, no dropped
   connection), RSS growth under 10% (largest RSS of the last window over the RSS at the end of the first
   window, which is warm), p99 drift under 20% (p99 of the last window over p99 of the first window); prints
   a table and writes ``artifacts/reliability/soak-<UTC time>.json``. Exits 1 when a promise is missed
   (``--no-gate`` only reports).

The pieces live in modules of their own: the HTTP client (``loadtest.client``), the load generators
(``loadtest.loadgen``), the RSS sampler (``loadtest.memory``), the scenarios and their verdicts
(``loadtest.promises``, shared with ``tests/integration/test_overload.py``). This module is the command and
its report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.host import free_port
from core.process import ServerProcess
from core.service_command import service_command
from loadtest.client import run_async
from loadtest.loadgen import SATURATION_CONCURRENCY, LoadRun, encode_bodies
from loadtest.memory import pid_listening_on
from loadtest.messages import load_messages
from loadtest.promises import MAX_P99_DRIFT, MAX_RSS_GROWTH, Window, evaluate, machine, overload, soak

DEFAULT_REPORT_DIR = Path("artifacts/reliability")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class SoakResult:
    date: str
    url: str
    model_dir: str | None
    model: dict[str, Any]
    saturation: dict[str, Any]
    rate: float
    fraction: float
    duration_s: float
    run: dict[str, Any]
    windows: list[dict[str, Any]]
    rss_warm_bytes: int
    rss_peak_last_bytes: int
    rss_growth: float
    p99_first_ms: float
    p99_last_ms: float
    p99_drift: float
    errors: int
    verdicts: dict[str, bool]
    machine: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(self.verdicts.values())


def _get_json(url: str) -> Any:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="Bundle to serve (starts python -m service on it).")
    target.add_argument("--url", help="A service already running on 127.0.0.1 (give --pid if not found).")
    parser.add_argument("--pid", type=int, help="The service's pid for RSS (with --url).")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="Run the overload check instead (promise 2): --fraction 2.0 for --duration 60 by default.",
    )
    parser.add_argument("--duration", type=float, help="Seconds of load (soak 600, overload 60).")
    parser.add_argument(
        "--fraction", type=float, help="Load as a share of saturation (soak 0.5, overload 2)."
    )
    parser.add_argument("--window", type=float, default=60.0, help="Seconds per reporting window (60).")
    parser.add_argument(
        "--saturation-seconds", type=float, default=20.0, help="Length of the saturation run (20)."
    )
    parser.add_argument(
        "--saturation-concurrency",
        type=int,
        default=SATURATION_CONCURRENCY,
        help=f"Connections of that closed loop ({SATURATION_CONCURRENCY}).",
    )
    parser.add_argument("--warmup-seconds", type=float, default=10.0, help="Warm-up before measuring (10).")
    parser.add_argument(
        "--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help=f"JSON reports ({DEFAULT_REPORT_DIR})."
    )
    parser.add_argument("--no-gate", action="store_true", help="Report only; exit 0 on a missed promise.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration is None:
        args.duration = 60.0 if args.overload else 600.0
    if args.fraction is None:
        args.fraction = 2.0 if args.overload else 0.5
    messages = load_messages()
    bodies = encode_bodies(messages.texts)
    print(f"messages: {len(bodies)} from {messages.source}", flush=True)
    report_dir: Path = args.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "overload" if args.overload else "soak"

    with contextlib.ExitStack() as stack:
        if args.model_dir is not None:
            port = free_port()
            log_path = report_dir / f"{kind}-{stamp}-service.log"
            server = stack.enter_context(
                ServerProcess("service", service_command(args.model_dir, port), port, log_path)
            )
            assert server.process is not None
            url, pid = server.url, server.process.pid
        else:
            found = _running_service(args)
            if isinstance(found, str):
                print(f"error: {found}", file=sys.stderr)
                return 2
            url, pid = found
        info = _get_json(url + "/info")
        print(f"service {url} (pid {pid}): {info['name']} {info['version']}", flush=True)
        path = report_dir / f"{kind}-{stamp}.json"
        if args.overload:
            return _run_overload(args, url, pid, info, bodies=bodies, path=path)
        return _run_soak(args, url, pid, info, bodies=bodies, path=path)


def _running_service(args: argparse.Namespace) -> tuple[str, int] | str:
    """``--url`` and the pid listening there (or ``--pid``); a string says what is wrong."""
    url = str(args.url).rstrip("/")
    if httpx.URL(url).host not in LOOPBACK:
        return f"--url must point at this machine ({', '.join(LOOPBACK)})"
    port = httpx.URL(url).port or 80
    found = args.pid or pid_listening_on(port)
    if found is None:
        return "cannot find the service's pid; pass --pid"
    return url, int(found)


def _log(text: str) -> None:
    print(text, flush=True)


def _run_soak(
    args: argparse.Namespace, url: str, pid: int, info: dict[str, Any], *, bodies: list[bytes], path: Path
) -> int:
    saturation, load, windows, _sampler = run_async(
        soak(
            url,
            pid,
            bodies,
            duration_s=args.duration,
            fraction=args.fraction,
            window_s=min(args.window, args.duration),
            saturation_s=args.saturation_seconds,
            saturation_concurrency=args.saturation_concurrency,
            warmup_s=args.warmup_seconds,
            log=_log,
        )
    )
    result = soak_result(args, url, info, saturation=saturation, load=load, windows=windows)
    path.write_text(json.dumps(asdict(result), indent=2, default=str) + "\n", encoding="utf-8")
    print_soak(result, load, path)
    if not result.passed and not args.no_gate:
        return 1
    return 0


def soak_result(
    args: argparse.Namespace,
    url: str,
    info: dict[str, Any],
    *,
    saturation: dict[str, Any],
    load: LoadRun,
    windows: list[Window],
) -> SoakResult:
    """The soak report (``artifacts/reliability/soak-<UTC>.json``; docs/generate.py reads it)."""
    verdicts, figures, errors = evaluate(windows, load)
    return SoakResult(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        url=url,
        model_dir=str(args.model_dir) if args.model_dir else None,
        model={"name": info["name"], "version": info["version"]},
        saturation=saturation,
        rate=load.offered / load.duration_s if load.duration_s else 0.0,
        fraction=args.fraction,
        duration_s=load.duration_s,
        run=load.summary(),
        windows=[asdict(window) for window in windows],
        errors=errors,
        verdicts=verdicts,
        machine=machine(),
        rss_warm_bytes=int(figures["rss_warm_bytes"]),
        rss_peak_last_bytes=int(figures["rss_peak_last_bytes"]),
        rss_growth=figures["rss_growth"],
        p99_first_ms=figures["p99_first_ms"],
        p99_last_ms=figures["p99_last_ms"],
        p99_drift=figures["p99_drift"],
    )


def print_soak(result: SoakResult, load: LoadRun, path: Path) -> None:
    summary = load.summary()
    print(
        f"\nsoak: {result.duration_s:.0f} s at {result.rate:.1f} req/s "
        f"({result.fraction:.2f} x saturation {result.saturation['ok_rate']:.1f} req/s), "
        f"{summary['requests']} requests, statuses {summary['statuses']}, errors {result.errors}\n"
        f"  RSS warm {result.rss_warm_bytes / 2**20:.1f} MiB -> last-window peak "
        f"{result.rss_peak_last_bytes / 2**20:.1f} MiB: growth {result.rss_growth * 100:+.1f}% "
        f"(limit {MAX_RSS_GROWTH * 100:.0f}%)\n"
        f"  p99 first window {result.p99_first_ms:.1f} ms -> last window {result.p99_last_ms:.1f} ms: drift "
        f"{result.p99_drift * 100:+.1f}% (limit {MAX_P99_DRIFT * 100:.0f}%)\n"
        f"  overall p50 {summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms\n"
        f"  verdicts: {result.verdicts}\n  report: {path}",
        flush=True,
    )


def _run_overload(
    args: argparse.Namespace, url: str, pid: int, info: dict[str, Any], *, bodies: list[bytes], path: Path
) -> int:
    result = run_async(
        overload(
            url,
            pid,
            bodies,
            duration_s=args.duration,
            deadline_s=float(info["limits"]["request_deadline_seconds"]),
            factor=args.fraction,
            saturation_s=args.saturation_seconds,
            saturation_concurrency=args.saturation_concurrency,
            warmup_s=args.warmup_seconds,
            log=_log,
        )
    )
    result |= {"url": url, "model_dir": str(args.model_dir) if args.model_dir else None}
    result["model"] = {"name": info["name"], "version": info["version"]}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"  report: {path}", flush=True)
    if not all(result["verdicts"].values()) and not args.no_gate:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
