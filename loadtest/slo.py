"""The SLO gate: compare a Locust run's stats CSV with the bounds in ``loadtest/slo.yaml``.

::

    python -m loadtest.slo --stats reports/loadtest/<run>/locust_stats.csv [--slo loadtest/slo.yaml]

Exits 0 when every bound is met, 1 naming each missed bound, 3 when the SLO file is unusable, 6 when the stats
are (``loadtest/exit_codes.py``).
Rows of type ``server`` (the service's timing headers, reported by the locustfile) and Locust's "Aggregated"
row are not HTTP requests and are left out of the failure ratio and throughput.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtest.exit_codes import ExitCode

DEFAULT_SLO = Path(__file__).with_name("slo.yaml")
PERCENTILES = ("p50", "p90", "p95", "p99")
NON_HTTP_TYPES = frozenset({"server", ""})
AGGREGATED = "Aggregated"
# Locust's CSV column for each percentile key.
PERCENTILE_COLUMNS = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%"}


class SloError(ValueError):
    """The SLO file or the stats CSV cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Slo:
    """Bounds for one run (see ``loadtest/slo.yaml`` for what each means)."""

    max_failure_ratio: float
    min_throughput_rps: float
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Entry name -> percentile key (``p50``, ``p90``, ``p95``, ``p99``) -> upper bound in milliseconds."""


@dataclass(frozen=True)
class EntryStats:
    """One row of Locust's ``*_stats.csv``."""

    type: str
    name: str
    requests: int
    failures: int
    rps: float
    percentiles_ms: dict[str, float]

    @property
    def is_http(self) -> bool:
        return self.type not in NON_HTTP_TYPES and self.name != AGGREGATED


@dataclass(frozen=True)
class Outcome:
    """One bound and what the run measured against it."""

    bound: str
    limit: float
    measured: float
    passed: bool

    def describe(self) -> str:
        verdict = "ok    " if self.passed else "MISSED"
        return f"{verdict} {self.bound}: measured {_fmt(self.measured)}, bound {_fmt(self.limit)}"


def load_slo(path: Path) -> Slo:
    """Read and validate an SLO file.

    Raises:
        SloError: the file is missing, not YAML, or a field is missing, unknown, or not a valid number.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SloError(f"{path}: SLO file not found") from exc
    except yaml.YAMLError as exc:
        raise SloError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SloError(f"{path}: expected a mapping with max_failure_ratio, min_throughput_rps, latency_ms")
    known = {"max_failure_ratio", "min_throughput_rps", "latency_ms"}
    for key in raw:
        if key not in known:
            raise SloError(f"{path}: unknown field '{key}' (known: {', '.join(sorted(known))})")
    ratio = _number(path, "max_failure_ratio", raw.get("max_failure_ratio"))
    if ratio > 1:
        raise SloError(f"{path}: field 'max_failure_ratio' must be between 0 and 1, got {ratio}")
    throughput = _number(path, "min_throughput_rps", raw.get("min_throughput_rps"))
    latency_raw = raw.get("latency_ms", {})
    if not isinstance(latency_raw, dict):
        raise SloError(f"{path}: field 'latency_ms' must map entry names to percentile bounds")
    latency: dict[str, dict[str, float]] = {}
    for entry, bounds in latency_raw.items():
        where = f"latency_ms.{entry}"
        if not isinstance(bounds, dict) or not bounds:
            raise SloError(f"{path}: field '{where}' must map percentiles (p95, p99, ...) to milliseconds")
        latency[str(entry)] = {}
        for key, value in bounds.items():
            if key not in PERCENTILES:
                raise SloError(f"{path}: unknown field '{where}.{key}' (known: {', '.join(PERCENTILES)})")
            latency[str(entry)][key] = _number(path, f"{where}.{key}", value, positive=True)
    return Slo(max_failure_ratio=ratio, min_throughput_rps=throughput, latency_ms=latency)


def _number(path: Path, name: str, value: Any, positive: bool = False) -> float:
    if value is None:
        raise SloError(f"{path}: field '{name}' is missing")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SloError(f"{path}: field '{name}' must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise SloError(f"{path}: field '{name}' must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def read_stats(path: Path) -> list[EntryStats]:
    """Parse Locust's ``<prefix>_stats.csv``.

    Raises:
        SloError: the file is missing or lacks Locust's columns.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise SloError(f"{path}: stats file not found (did Locust run with --csv?)") from exc
    required = {"Type", "Name", "Request Count", "Failure Count", "Requests/s"}
    if not rows or not required <= set(rows[0]):
        raise SloError(f"{path}: not a Locust stats CSV (need columns {', '.join(sorted(required))})")
    return [
        EntryStats(
            type=row["Type"],
            name=row["Name"],
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            rps=_float(row["Requests/s"]),
            percentiles_ms={key: _float(row.get(column, "")) for key, column in PERCENTILE_COLUMNS.items()},
        )
        for row in rows
    ]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def evaluate(slo: Slo, stats: list[EntryStats]) -> list[Outcome]:
    """Every bound of ``slo`` checked against ``stats``: HTTP rows only for failures and throughput."""
    http = [entry for entry in stats if entry.is_http]
    total = sum(entry.requests for entry in http)
    failures = sum(entry.failures for entry in http)
    # No requests at all is a failed run, not a perfect one.
    ratio = failures / total if total else 1.0
    outcomes = [
        Outcome("failure ratio", slo.max_failure_ratio, ratio, total > 0 and ratio <= slo.max_failure_ratio),
        Outcome(
            "throughput (req/s, minimum)",
            slo.min_throughput_rps,
            sum(entry.rps for entry in http),
            sum(entry.rps for entry in http) >= slo.min_throughput_rps,
        ),
    ]
    by_name = {entry.name: entry for entry in http}
    for name, bounds in slo.latency_ms.items():
        entry = by_name.get(name)
        for key, limit in bounds.items():
            measured = entry.percentiles_ms.get(key, math.nan) if entry and entry.requests else math.nan
            # A bound on an entry that saw no requests is missed: the scenario did not run.
            outcomes.append(Outcome(f"{name} {key} (ms)", limit, measured, measured <= limit))
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    """Human-readable verdict: one line per bound, then a summary line naming what was missed."""
    lines = [outcome.describe() for outcome in outcomes]
    missed = [outcome.bound for outcome in outcomes if not outcome.passed]
    lines.append(f"SLO MISSED: {', '.join(missed)}" if missed else "SLO met")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "no data"
    return f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.slo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stats", type=Path, required=True, help="Locust's <prefix>_stats.csv")
    parser.add_argument("--slo", type=Path, default=DEFAULT_SLO, help="bounds file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        bounds = load_slo(args.slo)
    except SloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID_SLO
    try:
        stats = read_stats(args.stats)
    except SloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.LOAD_FAILED
    outcomes = evaluate(bounds, stats)
    print(report(outcomes))
    return ExitCode.SLO_MET if all(outcome.passed for outcome in outcomes) else ExitCode.SLO_MISSED


if __name__ == "__main__":
    sys.exit(main())
