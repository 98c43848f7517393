"""A short headless Locust run (make loadtest's code path) against the real service on the tiny bundle.

It must end with zero failed requests, the server's timing headers reported as their own entries, the
reports written, and a passing SLO check with loose bounds (the tiny model is not the real one; the bounds
only catch a broken or stalled service, not a slow machine).
"""

from __future__ import annotations

import csv
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.exit_codes import ExitCode
from tests.support import REPO_ROOT
from tests.support.server import ServiceProcess, run_service

pytestmark = pytest.mark.slow

LOOSE_SLO = """
max_failure_ratio: 0.0
min_throughput_rps: 5
latency_ms:
  classify single: {p95: 2000, p99: 5000}
  classify batch: {p99: 10000}
"""


@pytest.fixture(scope="module")
def service(tiny_bundle_dir: Path) -> Iterator[ServiceProcess]:
    with run_service(tiny_bundle_dir) as running:
        yield running


def run_loadtest(
    host: str, slo_text: str, out: Path, users: int, duration: str, *, api_key: str | None = None
) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TEXTCLF_API_KEY", "TEXTCLF_API_KEY_FILE")}
    if api_key is not None:
        env["TEXTCLF_API_KEY"] = api_key
    slo_file = out / "slo.yaml"
    slo_file.write_text(slo_text, encoding="utf-8")
    command = [sys.executable, "-m", "loadtest.run", "--host", host, "--slo", str(slo_file)]
    command += ["--users", str(users), "--spawn-rate", str(users), "--duration", duration]
    command += ["--out", str(out / "reports")]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_short_locust_run_has_no_failures_and_passes_slo(service: ServiceProcess, tmp_path: Path) -> None:
    completed = run_loadtest(service.base_url, LOOSE_SLO, tmp_path, users=4, duration="12s")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "SLO met" in completed.stdout

    (run_dir,) = (tmp_path / "reports").iterdir()
    for name in ("locust_stats.csv", "locust_stats_history.csv", "report.html", "latency.png", "slo.txt"):
        assert (run_dir / name).is_file(), name
    with (run_dir / "locust_stats.csv").open(newline="") as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    for entry in ("classify single", "classify batch"):
        assert int(rows[("POST", entry)]["Request Count"]) > 0, entry
    # Every response passed the checks (status, schema, label among /info's labels).
    assert all(int(row["Failure Count"]) == 0 for row in rows.values()), output
    # The service's timing headers arrive as their own entries, one per classify request.
    classified = sum(int(rows[("POST", e)]["Request Count"]) for e in ("classify single", "classify batch"))
    for timing in ("queue", "inference", "tokenization"):
        assert int(rows[("server", timing)]["Request Count"]) == classified, timing


def test_slo_gate_fails_the_run_when_a_bound_is_missed(service: ServiceProcess, tmp_path: Path) -> None:
    # No service answers a million requests per second here: the bound must be reported as missed.
    slo_text = LOOSE_SLO.replace("min_throughput_rps: 5", "min_throughput_rps: 1000000")
    completed = run_loadtest(service.base_url, slo_text, tmp_path, users=2, duration="4s")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "SLO MISSED: throughput (req/s, minimum)" in completed.stdout


def test_loadtest_refuses_to_start_without_a_ready_service(tmp_path: Path) -> None:
    from core.host import free_port

    completed = run_loadtest(f"http://127.0.0.1:{free_port()}", LOOSE_SLO, tmp_path, users=1, duration="2s")
    assert completed.returncode == ExitCode.NOT_READY == 4
    assert "start the service first" in completed.stderr


def test_invalid_slo_file_has_its_own_exit_code(service: ServiceProcess, tmp_path: Path) -> None:
    completed = run_loadtest(service.base_url, "max_failure_ratio: lots\n", tmp_path, users=1, duration="2s")
    assert completed.returncode == ExitCode.INVALID_SLO == 3
    assert "field 'max_failure_ratio' must be a number" in completed.stderr


def test_loadtest_sends_the_api_key_the_service_requires(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    key = secrets.token_hex(16)
    with run_service(tiny_bundle_dir, env={"TEXTCLF_API_KEY": key}) as keyed:
        refused = run_loadtest(keyed.base_url, LOOSE_SLO, tmp_path / "no-key", users=1, duration="2s")
        assert refused.returncode == ExitCode.UNAUTHORIZED == 5, refused.stdout + refused.stderr
        assert "requires an API key" in refused.stderr
        wrong = run_loadtest(keyed.base_url, LOOSE_SLO, tmp_path / "bad", users=1, duration="2s", api_key="x")
        assert wrong.returncode == ExitCode.UNAUTHORIZED, wrong.stdout + wrong.stderr
        assert "refused the API key from TEXTCLF_API_KEY" in wrong.stderr

        completed = run_loadtest(
            keyed.base_url, LOOSE_SLO, tmp_path / "key", users=2, duration="6s", api_key=key
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output
        (run_dir,) = (tmp_path / "key" / "reports").iterdir()
        with (run_dir / "locust_stats.csv").open(newline="") as handle:
            rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
        # Every request, /info included, carried the key: nothing was refused.
        assert int(rows[("POST", "classify single")]["Request Count"]) > 0
        assert all(int(row["Failure Count"]) == 0 for row in rows.values()), output
        assert key not in output  # only where the key came from is printed
