"""Headless load test against a running service, then the SLO gate (``make loadtest``).

::

    python -m loadtest.run --host http://127.0.0.1:8000 --users 16 --spawn-rate 8 --duration 30s

Writes into ``reports/loadtest/<UTC timestamp>/``: Locust's CSVs (``locust_stats.csv``,
``locust_stats_history.csv``, ``locust_failures.csv``, ``locust_exceptions.csv``), its HTML report
(``report.html``), ``latency.png`` (p50/p95/p99 and requests/s over time) and ``slo.txt`` (the verdict).

Exit codes (``loadtest/exit_codes.py``): 0 every SLO bound met; 1 a bound in ``loadtest/slo.yaml`` missed (the
last line names it); 2 bad arguments; 3 the SLO file is invalid; 4 the service is not ready; 5 the service
refused the API key (or ``TEXTCLF_API_KEY_FILE`` is unreadable); 6 Locust failed or left no stats.

When ``TEXTCLF_API_KEY`` or ``TEXTCLF_API_KEY_FILE`` is set, every request carries ``Authorization: Bearer
<key>`` (``loadtest/auth.py``); the key is checked once against ``/info`` before the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from core.process import NotReadyError, http_ok, wait_until
from loadtest import plots, slo
from loadtest.auth import ApiKey, ApiKeyError, api_key_from_env
from loadtest.exit_codes import ExitCode

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CSV_PREFIX = "locust"


def wait_ready(host: str, timeout: float) -> str | None:
    """Poll ``/health/ready`` until it answers 200. Returns ``None`` when ready, else the last problem."""
    try:
        wait_until(http_ok(f"{host.rstrip('/')}/health/ready"), timeout_s=timeout, interval_s=0.5)
    except NotReadyError as exc:
        return exc.last_answer
    return None


def check_access(host: str, key: ApiKey | None) -> str | None:
    """``GET /info`` with the key, if any. Returns ``None`` unless the service refuses it (401/403), so a run
    with a missing or wrong key stops at once instead of collecting thousands of failed requests."""
    headers = key.headers() if key else {}
    request = urllib.request.Request(f"{host.rstrip('/')}/info", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            return None  # not an access problem; the run's own checks will report it
        if key is None:
            return (
                f"{host}/info answered {exc.code}: the service requires an API key; "
                "set TEXTCLF_API_KEY or TEXTCLF_API_KEY_FILE to the service's key"
            )
        return f"{host}/info answered {exc.code}: the service refused the API key from {key.source}"
    except (urllib.error.URLError, OSError):
        return None  # it was ready a moment ago; Locust will count what fails


def locust_command(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """The headless Locust invocation (``--exit-code-on-error 0``: failures are judged by the SLO gate)."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(args.locustfile),
        "--headless",
        "--host",
        args.host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.duration,
        "--stop-timeout",
        "10",
        "--csv",
        str(out_dir / CSV_PREFIX),
        "--csv-full-history",
        "--html",
        str(out_dir / "report.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="service base URL (%(default)s)")
    parser.add_argument("--users", type=int, default=16, help="concurrent Locust users (%(default)s)")
    parser.add_argument("--spawn-rate", type=float, default=8, help="users started per second (%(default)s)")
    parser.add_argument("--duration", default="30s", help="run time, e.g. 30s, 2m (%(default)s)")
    parser.add_argument("--slo", type=Path, default=slo.DEFAULT_SLO, help="SLO bounds (%(default)s)")
    parser.add_argument(
        "--out", type=Path, default=Path("reports/loadtest"), help="reports root (%(default)s)"
    )
    parser.add_argument("--locustfile", type=Path, default=LOCUSTFILE, help=argparse.SUPPRESS)
    parser.add_argument("--ready-timeout", type=float, default=10.0, help="seconds to wait for /health/ready")
    args = parser.parse_args(argv)

    # Fail on a bad SLO file or key file before spending the run's time.
    try:
        bounds = slo.load_slo(args.slo)
    except slo.SloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID_SLO
    try:
        key = api_key_from_env()
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNAUTHORIZED
    if problem := wait_ready(args.host, args.ready_timeout):
        print(
            f"error: {args.host}/health/ready is not answering 200 ({problem}); start the service first "
            "(make serve)",
            file=sys.stderr,
        )
        return ExitCode.NOT_READY
    if problem := check_access(args.host, key):
        print(f"error: {problem}", file=sys.stderr)
        return ExitCode.UNAUTHORIZED

    out_dir = args.out / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"loadtest: {args.users} users for {args.duration} against {args.host} -> {out_dir}", flush=True)
    if key is not None:
        print(f"loadtest: sending the API key from {key.source}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    completed = subprocess.run(locust_command(args, out_dir), check=False)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Locust shares the machine with the service; how much CPU it took says how far to trust the figures.
    locust_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cores = len(os.sched_getaffinity(0))
    load_note = (
        f"load generator: Locust used {locust_cpu:.1f} CPU-seconds in {elapsed:.0f} s "
        f"({locust_cpu / elapsed:.2f} cores, {locust_cpu / (elapsed * cores):.0%} of {cores} cores)"
    )
    if completed.returncode != 0:
        print(f"error: locust exited with {completed.returncode}", file=sys.stderr)
        return ExitCode.LOAD_FAILED

    history = out_dir / f"{CSV_PREFIX}_stats_history.csv"
    if history.is_file():
        plots.plot_latency(history, out_dir / "latency.png", title=f"{args.users} users, {args.host}")
    try:
        outcomes = slo.evaluate(bounds, slo.read_stats(out_dir / f"{CSV_PREFIX}_stats.csv"))
    except slo.SloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.LOAD_FAILED
    verdict = slo.report(outcomes)
    (out_dir / "slo.txt").write_text(f"{verdict}\n{load_note}\n", encoding="utf-8")
    print(f"\nSLO check ({args.slo}):\n{verdict}\n{load_note}\nreports: {out_dir}")
    return ExitCode.SLO_MET if all(outcome.passed for outcome in outcomes) else ExitCode.SLO_MISSED


if __name__ == "__main__":
    sys.exit(main())
