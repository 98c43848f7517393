"""The SLO gate: a missed bound fails and is named; a bad slo.yaml names its file and field."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loadtest import slo

COLUMNS = ["Type", "Name", "Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%"]


def write_stats(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def healthy_rows() -> list[list[object]]:
    return [
        ["POST", "classify single", 1000, 0, 80.0, 20, 60, 90],
        ["POST", "classify batch", 200, 0, 16.0, 150, 400, 700],
        ["GET", "/info", 50, 0, 4.0, 2, 4, 5],
        # Timing entries from the service's headers and the Aggregated row are not HTTP requests.
        ["server", "queue", 1000, 0, 80.0, 1, 2, 3],
        ["", "Aggregated", 2250, 0, 180.0, 10, 300, 600],
    ]


def write_slo(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SLO_TEXT = """
max_failure_ratio: 0.01
min_throughput_rps: 50
latency_ms:
  classify single: {p95: 100, p99: 200}
  classify batch: {p99: 1000}
"""


def run_gate(tmp_path: Path, rows: list[list[object]], slo_text: str = SLO_TEXT) -> list[slo.Outcome]:
    bounds = slo.load_slo(write_slo(tmp_path / "slo.yaml", slo_text))
    return slo.evaluate(bounds, slo.read_stats(write_stats(tmp_path / "stats.csv", rows)))


def missed(outcomes: list[slo.Outcome]) -> list[str]:
    return [o.bound for o in outcomes if not o.passed]


def test_healthy_run_meets_every_bound(tmp_path: Path) -> None:
    outcomes = run_gate(tmp_path, healthy_rows())
    assert missed(outcomes) == []
    # Throughput counts HTTP rows only: 80 + 16 + 4, not the server or Aggregated rows.
    throughput = next(o for o in outcomes if o.bound.startswith("throughput"))
    assert throughput.measured == pytest.approx(100.0)
    assert slo.report(outcomes).endswith("SLO met")


def test_p99_over_bound_is_missed_and_named(tmp_path: Path) -> None:
    rows = healthy_rows()
    rows[0][7] = 250  # classify single p99
    outcomes = run_gate(tmp_path, rows)
    assert missed(outcomes) == ["classify single p99 (ms)"]
    assert "SLO MISSED: classify single p99 (ms)" in slo.report(outcomes)


def test_failure_ratio_counts_http_failures_only(tmp_path: Path) -> None:
    rows = healthy_rows()
    rows[1][3] = 30  # 30 failed batches out of 1250 HTTP requests = 2.4 %
    outcomes = run_gate(tmp_path, rows)
    ratio = next(o for o in outcomes if o.bound == "failure ratio")
    assert ratio.measured == pytest.approx(30 / 1250)
    assert missed(outcomes) == ["failure ratio"]


def test_low_throughput_is_missed(tmp_path: Path) -> None:
    rows = [[*row[:4], row[4] / 10, *row[5:]] for row in healthy_rows()]
    assert missed(run_gate(tmp_path, rows)) == ["throughput (req/s, minimum)"]


def test_a_scenario_that_never_ran_misses_its_bound(tmp_path: Path) -> None:
    rows = [row for row in healthy_rows() if row[1] != "classify batch"]
    rows = [[*row[:4], 120.0, *row[5:]] if row[1] == "classify single" else row for row in rows]
    assert missed(run_gate(tmp_path, rows)) == ["classify batch p99 (ms)"]


def test_no_requests_at_all_fails(tmp_path: Path) -> None:
    outcomes = run_gate(tmp_path, [["", "Aggregated", 0, 0, 0.0, "N/A", "N/A", "N/A"]])
    assert "failure ratio" in missed(outcomes)


def test_cli_exit_code_names_missed_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = healthy_rows()
    rows[0][6] = 150  # classify single p95
    stats = write_stats(tmp_path / "stats.csv", rows)
    slo_file = write_slo(tmp_path / "slo.yaml", SLO_TEXT)
    assert slo.main(["--stats", str(stats), "--slo", str(slo_file)]) == 1
    assert "SLO MISSED: classify single p95 (ms)" in capsys.readouterr().out
    rows[0][6] = 50
    write_stats(stats, rows)
    assert slo.main(["--stats", str(stats), "--slo", str(slo_file)]) == 0


def test_shipped_slo_file_is_valid() -> None:
    bounds = slo.load_slo(slo.DEFAULT_SLO)
    assert 0 <= bounds.max_failure_ratio < 1
    assert "classify single" in bounds.latency_ms


VALID_HEAD = "max_failure_ratio: 0\nmin_throughput_rps: 5\n"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("min_throughput_rps: 5\nlatency_ms: {}\n", "max_failure_ratio"),
        ("max_failure_ratio: lots\nmin_throughput_rps: 5\n", "max_failure_ratio"),
        ("max_failure_ratio: 1.5\nmin_throughput_rps: 5\n", "max_failure_ratio"),
        ("max_failure_ratio: 0\nmin_throughput_rps: -1\n", "min_throughput_rps"),
        (
            "max_failure_ratio: 0\nmin_throughput_rps: 5\nlatency_ms: {single: {p95: fast}}\n",
            "latency_ms.single.p95",
        ),
        (
            "max_failure_ratio: 0\nmin_throughput_rps: 5\nlatency_ms: {single: {p42: 3}}\n",
            "latency_ms.single.p42",
        ),
        ("max_failure_ratio: 0\nmin_throughput_rps: 5\nlatency_ms: {single: 300}\n", "latency_ms.single"),
        ("max_failure_ratio: 0\nmin_throughput_rps: 5\np95_ms: 300\n", "p95_ms"),
    ],
)
def test_bad_slo_file_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write_slo(tmp_path / "bad-slo.yaml", text)
    with pytest.raises(slo.SloError) as error:
        slo.load_slo(path)
    assert str(path) in str(error.value)
    assert f"'{field}'" in str(error.value)


def test_unparsable_or_missing_slo_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(slo.SloError, match="not valid YAML"):
        slo.load_slo(write_slo(tmp_path / "slo.yaml", "max_failure_ratio: [unclosed\n"))
    with pytest.raises(slo.SloError, match="not found"):
        slo.load_slo(tmp_path / "absent.yaml")


def test_cli_bad_slo_has_its_own_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = write_stats(tmp_path / "stats.csv", healthy_rows())
    bad = write_slo(tmp_path / "slo.yaml", "max_failure_ratio: nope\nmin_throughput_rps: 1\n")
    assert slo.main(["--stats", str(stats), "--slo", str(bad)]) == 3
    assert f"{bad}: field 'max_failure_ratio'" in capsys.readouterr().err


def test_cli_unusable_stats_exit_code_differs_from_a_bad_slo_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slo_file = write_slo(tmp_path / "slo.yaml", SLO_TEXT)
    assert slo.main(["--stats", str(tmp_path / "absent.csv"), "--slo", str(slo_file)]) == 6
    assert "stats file not found" in capsys.readouterr().err


def test_stats_file_that_is_not_locust_output_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(slo.SloError, match="not a Locust stats CSV"):
        slo.read_stats(path)
