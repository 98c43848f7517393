"""make docs: the tables come from the artifact files; a missing artifact is named, never invented."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from docs import generate
from tests.support import REPO_ROOT


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def empty_docs(root: Path) -> None:
    """Every document the generator writes, holding only its markers."""
    for doc, sections in generate.SECTIONS.items():
        path = root / doc
        path.parent.mkdir(parents=True, exist_ok=True)
        blocks = [
            f"<!-- generated:begin {name} -->\nold text\n<!-- generated:end {name} -->" for name in sections
        ]
        path.write_text("# Title\n\nKept prose.\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")


def split(f1: float, macro_f1: float, accuracy: float, roc_auc: float) -> dict[str, float]:
    return {"f1": f1, "macro_f1": macro_f1, "accuracy": accuracy, "roc_auc": roc_auc}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    empty_docs(tmp_path)
    return tmp_path


def test_missing_artifacts_name_the_command_that_makes_them(root: Path) -> None:
    generate.generate(generate.Sources(root=root))

    training = (root / "docs/training.md").read_text(encoding="utf-8")
    performance = (root / "docs/performance.md").read_text(encoding="utf-8")
    reliability = (root / "docs/reliability.md").read_text(encoding="utf-8")
    assert "`make train` writes it" in training
    assert "`make export` writes it" in performance
    assert "`make bench` writes it" in performance
    assert "`make soak` writes it" in reliability
    assert "--overload` writes it" in reliability
    assert "`make export` writes it" in (root / "docs/export.md").read_text(encoding="utf-8")
    assert "`make compose-test` writes it" in (root / "docs/deployment.md").read_text(encoding="utf-8")
    assert "old text" not in training + performance + reliability
    assert "Kept prose." in training


def test_training_table_renders_model_baseline_and_margin_from_metrics_json(root: Path) -> None:
    run = root / "artifacts/quality-runs/x/20261201-120000-full"
    write_json(
        run / "metrics.json",
        {
            "test": split(0.9123, 0.7777, 0.8642, 0.9111),
            "baseline": {
                "test": split(0.9000, 0.7500, 0.8500, 0.8800),
                "train_rows": 20877,
                "fit_seconds": 23.4,
            },
            "decision_threshold": 0.6,
            "training": {
                "examples_seen": 7181,
                "epochs_run": 1,
                "train_seconds": 1812.2,
                "examples_per_second": 3.96,
            },
        },
    )
    write_json(run / "data.json", {"task": "related"})
    old = root / "artifacts/runs/20261201-090000-quick"
    write_json(old / "metrics.json", {"test": {"f1": 0.5}, "training": {}})
    (root / "artifacts/runs/20261201-100000-quick").mkdir(parents=True)  # still training: no metrics.json
    (root / "artifacts/runs/latest").symlink_to("20261201-090000-quick")

    section = generate.training_runs_section(generate.Sources(root=root))

    assert "`artifacts/quality-runs/x/20261201-120000-full`" in section
    assert "2026-12-01 12:00 UTC" in section
    assert "| 0.912 | 0.778 | 0.864 | 0.911 | 0.60 |" in section
    assert "| 0.900 | 0.750 | 0.850 | 0.880 |" in section
    assert "| +0.012 | +0.028 | +0.014 | +0.031 |" in section
    assert "7,181 examples" in section
    assert "20,877 rows" in section
    # The older run lacks most figures and its baseline: dashes, never numbers.
    assert "| 0.500 | – | – | – |" in section
    assert "baseline: not in this `metrics.json`" in section
    assert section.count("20261201-090000-quick`") == 1, "latest -> the same run is listed once"
    assert "without a `metrics.json`" in section
    assert "`artifacts/runs/20261201-100000-quick`" in section


def test_export_speed_and_bench_name_file_cpu_isa_and_date(root: Path) -> None:
    model_dir = root / "models/disaster-related"
    write_json(
        model_dir / "manifest.json", {"name": "m", "version": "v1", "created_at": "2026-12-01T08:00:00+00:00"}
    )
    bench = {
        "machine": {"cpu": "Test CPU 9000", "isa": "avx2", "available_cores": 2},
        "results": {
            "1": {
                "pytorch_eager_fp32": {"texts_per_second": 35.0, "p50_ms": 28.0, "p99_ms": 45.5},
                "onnx_int8": {"texts_per_second": 141.76, "p50_ms": 6.8, "p99_ms": 12.9},
            }
        },
        "ratios": {"1": {"onnx_int8": 4.0503}},
        "served_quantization": "static_int8",
        "targets": {"1": 3.0},
        "targets_met": {"1": True},
    }
    write_json(model_dir / "bench.json", bench)
    os.utime(model_dir / "bench.json", (1_796_112_000, 1_796_112_000))  # 2026-12-01 08:00 UTC
    write_json(
        root / "bench/results.json",
        {
            "created_at": "2026-12-02T09:30:00+00:00",
            "machine": {"cpu": "Bench CPU", "isa": "avx512_vnni", "cores": 2},
            "comparison": [
                {
                    "concurrency": 32,
                    "ours": {
                        "throughput_rps": 166.34,
                        "latency_ms": {"p50": 183.3, "p95": 351.7, "p99": 453.8},
                    },
                    "baseline": {
                        "throughput_rps": 28.1,
                        "latency_ms": {"p50": 1061.5, "p95": 1726.5, "p99": 1937.3},
                    },
                    "ratio": {"throughput": 5.9196},
                }
            ],
            "targets": [
                {
                    "description": "throughput at concurrency 32, ours / baseline",
                    "target": 4.0,
                    "measured": 5.9196,
                    "met": True,
                }
            ],
        },
    )
    sources = generate.Sources(root=root)

    speed = generate.export_speed_section(sources)
    bench_text = generate.bench_section(sources)

    assert "Source: `models/disaster-related/bench.json`; CPU: Test CPU 9000; ISA: avx2" in speed
    assert "2026-12-01 08:00 UTC (file modification time)" in speed
    assert "| ONNX int8, served (`static_int8`) | 141.8 | 6.8 / 12.9 | 4.05× |" in speed
    assert "batch 1: ≥ 3.0× (met)" in speed
    assert (
        "Source: `bench/results.json`; CPU: Bench CPU; ISA: avx512_vnni; measured: 2026-12-02 09:30 UTC"
        in bench_text
    )
    assert "| 32 | 166.3 | 28.1 | 5.92× | 183.3 / 351.7 / 453.8 |" in bench_text
    assert "| throughput at concurrency 32, ours / baseline | 5.920 | 4.000 | met |" in bench_text


def test_soak_report_renders_the_newest_file_and_says_the_cpu_is_not_recorded(root: Path) -> None:
    folder = root / "artifacts/reliability"
    report = {
        "date": "2026-12-03T10:00:00+00:00",
        "duration_s": 600.0,
        "rate": 120.5,
        "fraction": 0.5,
        "saturation": {"ok_rate": 241.0},
        "run": {"requests": 72300, "statuses": {"200": 72300}},
        "errors": 0,
        "rss_warm_bytes": 150 * 2**20,
        "rss_peak_last_bytes": 156 * 2**20,
        "rss_growth": 0.04,
        "p99_first_ms": 20.0,
        "p99_last_ms": 21.0,
        "p99_drift": 0.05,
        "verdicts": {"no_errors": True, "rss_growth_under_10pct": True},
        "machine": {"cores": 2, "load_average_1m_at_end": 1.5},
    }
    write_json(folder / "soak-20261201T000000Z.json", report | {"rate": 1.0})
    write_json(folder / "soak-20261203T100000Z.json", report)

    section = generate.soak_section(generate.Sources(root=root))

    assert "`artifacts/reliability/soak-20261203T100000Z.json`" in section
    assert "CPU: not recorded in the file" in section
    assert "120.5 req/s" in section
    assert "150.0 → 156.0 MiB (+4.0%)" in section
    assert "no_errors passed" in section


def test_check_mode_reports_stale_documents_without_writing(root: Path) -> None:
    sources = generate.Sources(root=root)
    before = (root / "docs/training.md").read_text(encoding="utf-8")

    assert "docs/training.md" in generate.generate(sources, check=True)
    assert (root / "docs/training.md").read_text(encoding="utf-8") == before

    generate.generate(sources)
    assert generate.generate(sources, check=True) == []


def test_a_document_without_its_markers_is_an_error(root: Path) -> None:
    (root / "docs/performance.md").write_text("# Performance\n\nno markers\n", encoding="utf-8")

    with pytest.raises(generate.MarkerError, match=r"docs/performance\.md"):
        generate.generate(generate.Sources(root=root))


def test_quality_summary_prefers_the_profile_as_shipped_and_names_overrides(root: Path) -> None:
    from training.config import load_config

    configs = REPO_ROOT / "training" / "configs"
    (root / "training/configs").mkdir(parents=True)
    for name in ("full", "categories"):
        (root / f"training/configs/{name}.yaml").write_text((configs / f"{name}.yaml").read_text())

    def write_run(folder: str, profile: str, overrides: list[str], f1: float) -> None:
        run = root / "artifacts/quality-runs" / folder
        config = load_config(configs / f"{profile}.yaml", [*overrides, f"runs_dir={run.parent}"])
        (run / "config.yaml").parent.mkdir(parents=True)
        (run / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        baseline = {"test": split(0.900, 0.700, 0.800, 0.850)}
        write_json(run / "metrics.json", {"test": split(f1, 0.750, 0.850, 0.900), "baseline": baseline})
        write_json(run / "data.json", {"task": "related" if profile == "full" else "categories"})

    write_run("a/20261201-100000-full", "full", [], 0.910)
    write_run("b/20261201-110000-full", "full", ["train.epochs=2"], 0.950)  # newer, but not as shipped
    write_run("c/20261201-120000-categories", "categories", ["train.class_weights=balanced"], 0.600)

    section = generate.quality_summary_section(generate.Sources(root=root))

    full = next(line for line in section.splitlines() if line.startswith("| `full`"))
    assert "20261201-100000-full" in full
    assert "as shipped" in full
    assert "0.910 vs 0.900 (+0.010)" in full
    categories = next(line for line in section.splitlines() if line.startswith("| `categories`"))
    assert "`train.class_weights=balanced`" in categories
    assert "0.600 vs 0.900 (-0.300)" in categories
    assert "| `quick` | no finished run with a baseline |" in section
