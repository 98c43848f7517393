"""Write the measured tables in ``docs/`` from the artifacts that exist on this machine.

    make docs                                 # = python -m docs.generate
    python -m docs.generate --check           # writes nothing; exit 1 when a section is out of date

Each table sits between ``<!-- generated:begin NAME -->`` and ``<!-- generated:end NAME -->`` in its document
and names the file it was read from, the CPU and instruction set the file records (or says it records none)
and the date. When an artifact is missing, the section says which command produces it: no figure here is ever
typed by hand or made up. Everything outside the markers is left alone.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
NOT_RECORDED = "not recorded in the file"


@dataclass(frozen=True)
class Sources:
    """Where the artifacts are, relative to ``root`` (the repository; a temporary folder in tests)."""

    root: Path
    run_globs: tuple[str, ...] = ("artifacts/runs/*/metrics.json", "artifacts/quality-runs/*/*/metrics.json")
    model_dir: Path = Path("models/disaster-related")
    bench_dir: Path = Path("bench")
    reliability_dir: Path = Path("artifacts/reliability")
    compose_report: Path = Path("artifacts/compose-test/report.json")

    def path(self, relative: Path | str) -> Path:
        return self.root / relative


Renderer = Callable[[Sources], str]


# -------------------- formatting


def number(value: Any, digits: int = 3) -> str:
    """A figure from a file, or an en dash when the file has none (never a made-up value)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one ``l`` or ``r`` per column (default: all left)."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    lines = [_row(header), "|" + "|".join(marks) + "|"] + [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def shown_path(sources: Sources, path: Path) -> str:
    try:
        return path.relative_to(sources.root).as_posix()
    except ValueError:
        return path.as_posix()


def file_date(path: Path) -> str:
    """When the file was last written (for artifacts that do not record their own date)."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return stamp.strftime("%Y-%m-%d %H:%M UTC") + " (file modification time)"


def iso_date(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def source_line(sources: Sources, path: Path, *, cpu: str | None, isa: str | None, date: str) -> str:
    return (
        f"Source: `{shown_path(sources, path)}`; CPU: {cpu or NOT_RECORDED}; ISA: {isa or NOT_RECORDED}; "
        f"measured: {date}."
    )


def missing(what: str, command: str) -> str:
    return f"No {what} on this machine yet: `{command}` writes it, then `make docs` fills this section."


def read_json(path: Path) -> JSON | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


# -------------------- training: quality

RUN_STAMP = re.compile(r"^(\d{8}-\d{6})-(.+)$")
QUALITY_KEYS = ("f1", "macro_f1", "accuracy", "roc_auc")


@dataclass(frozen=True)
class Run:
    """One finished training run: its folder and what its ``metrics.json`` and ``data.json`` say."""

    directory: Path
    metrics: JSON
    data: JSON

    @property
    def date(self) -> str:
        match = RUN_STAMP.match(self.directory.name)
        if not match:
            return "not recorded"
        return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M UTC")

    @property
    def task(self) -> str:
        return str(self.data.get("task") or "?")


def find_runs(sources: Sources) -> tuple[list[Run], list[Path]]:
    """Finished runs (with a ``metrics.json``, each folder once) and run folders without one."""
    runs: dict[Path, Run] = {}
    for pattern in sources.run_globs:
        for metrics_path in sorted(sources.root.glob(pattern)):
            directory = metrics_path.parent.resolve()
            metrics = read_json(metrics_path)
            if directory in runs or metrics is None:
                continue
            data = read_json(directory / "data.json") or {}
            runs[directory] = Run(metrics_path.parent, metrics, data)
    unfinished = []
    for pattern in sources.run_globs:
        for folder in sorted(sources.root.glob(pattern.removesuffix("/metrics.json"))):
            if folder.is_dir() and not folder.is_symlink() and folder.resolve() not in runs:
                unfinished.append(folder)
    ordered = sorted(runs.values(), key=lambda run: (run.directory.name, str(run.directory)))
    return ordered, unfinished


def served_run_version(sources: Sources) -> str | None:
    manifest = read_json(sources.path(sources.model_dir) / "manifest.json")
    return str(manifest["version"]) if manifest and "version" in manifest else None


def training_runs_section(sources: Sources) -> str:
    runs, unfinished = find_runs(sources)
    if not runs:
        return missing("training run with a `metrics.json`", "make train")
    served = served_run_version(sources)
    header = ["run", "date", "task", "trained", "system", "test F1", "macro-F1", "accuracy", "ROC-AUC", "cut"]
    rows: list[list[str]] = []
    for run in runs:
        test = run.metrics.get("test", {})
        training = run.metrics.get("training", {})
        baseline = run.metrics.get("baseline")
        name = f"`{shown_path(sources, run.directory)}`"
        if served and run.directory.name == served:
            name += " (**served**)"
        trained = (
            f"{number(training.get('examples_seen'), 0)} examples, {number(training.get('epochs_run'), 0)} "
            f"epoch(s), {number(training.get('train_seconds'), 0)} s at "
            f"{number(training.get('examples_per_second'), 1)} ex/s"
        )
        cut = number(run.metrics.get("decision_threshold"), 2)
        rows.append([name, run.date, f"`{run.task}`", trained, "fine-tuned model", *_quality(test), cut])
        if not isinstance(baseline, dict):
            rows.append(["", "", "", "", "baseline: not in this `metrics.json`", "", "", "", "", ""])
            continue
        base_test = baseline.get("test", {})
        fit = f"{number(baseline.get('train_rows'), 0)} rows, fit {number(baseline.get('fit_seconds'), 0)} s"
        base_cut = number(baseline.get("decision_threshold"), 2)
        rows.append(["", "", "", fit, "TF-IDF + LR baseline", *_quality(base_test), base_cut])
        deltas = [_delta(test.get(key), base_test.get(key)) for key in QUALITY_KEYS]
        rows.append(["", "", "", "", "**model − baseline**", *deltas, ""])
    parts = [
        "Source: each run's `metrics.json` (`test` and `baseline.test`; `data.json` for the task); "
        "CPU and ISA: not recorded by training runs; date: the UTC start time in the run folder's name.",
        "",
        table(header, rows, "lllllrrrrr"),
        "",
        "F1 is the positive class's for binary tasks and micro-F1 for multi-label ones. `cut`: the decision "
        "threshold tuned on validation (– : argmax or per-label thresholds). – elsewhere: the file has no "
        "such figure.",
    ]
    if unfinished:
        names = ", ".join(f"`{shown_path(sources, folder)}`" for folder in unfinished)
        parts += ["", f"Run folders without a `metrics.json` (still training, or stopped): {names}."]
    return "\n".join(parts)


def _quality(split: JSON) -> list[str]:
    return [number(split.get(key)) for key in QUALITY_KEYS]


def _delta(model: Any, baseline: Any) -> str:
    if not isinstance(model, int | float) or not isinstance(baseline, int | float):
        return "–"
    return signed(model - baseline)


# -------------------- README: the quality summary

PROFILES = ("quick", "full", "categories", "kaggle_tweets")
"""The training profiles (``training/configs/<name>.yaml``) the README's quality table has one row for."""
WHERE_NOT_RECIPE = frozenset(
    {"runs_dir", "link_latest", "data.cache_dir", "data.path", "train.progress", "train.num_threads"}
)
"""Config keys that say where a run wrote, read or showed things, or how many threads it had: not what it
trained. A run differing from its profile only in these is the profile as shipped."""


def _flat(tree: JSON, prefix: str = "") -> JSON:
    flat: JSON = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def profile_overrides(sources: Sources, run: Run) -> list[str] | None:
    """The ``key=value`` settings where a run differs from its profile as shipped (``[]``: none), or None
    when the run has no ``config.yaml`` or no profile of its name."""
    import yaml

    from training.config import load_config

    match = RUN_STAMP.match(run.directory.name)
    profile = sources.path(f"training/configs/{match.group(2)}.yaml") if match else None
    config_path = run.directory / "config.yaml"
    if profile is None or not profile.is_file() or not config_path.is_file():
        return None
    used = _flat(yaml.safe_load(config_path.read_text(encoding="utf-8")) or {})
    data_path = used.get("data.path")
    shipped = _flat(load_config(profile, [f"data.path={data_path}"] if data_path else []).to_dict())
    keys = sorted((set(shipped) | set(used)) - WHERE_NOT_RECIPE)
    return [f"{key}={used.get(key)}" for key in keys if shipped.get(key) != used.get(key)]


def quality_summary_section(sources: Sources) -> str:
    """One row per profile: its newest run as shipped (else its newest run, with the overrides named)."""
    runs, _ = find_runs(sources)
    rows: list[list[str]] = []
    for name in PROFILES:
        candidates = []
        for run in reversed(runs):  # newest first
            match = RUN_STAMP.match(run.directory.name)
            if match and match.group(2) == name and isinstance(run.metrics.get("baseline"), dict):
                candidates.append((run, profile_overrides(sources, run)))
        if not candidates:
            rows.append([f"`{name}`", "no finished run with a baseline", "", "", "", "", ""])
            continue
        run, overrides = next((c for c in candidates if c[1] == []), candidates[0])
        test, base = run.metrics.get("test", {}), run.metrics["baseline"].get("test", {})
        named = overrides if overrides is not None else ["config unknown"]
        how = "as shipped" if overrides == [] else ", ".join(f"`{o}`" for o in named)
        figures = [
            f"{number(test.get(key))} vs {number(base.get(key))} ({_delta(test.get(key), base.get(key))})"
            for key in QUALITY_KEYS
        ]
        rows.append([f"`{name}` (`{run.task}`)", f"`{shown_path(sources, run.directory)}`", how, *figures])
    header = ["profile (task)", "run", "config", "F1", "macro-F1", "accuracy", "ROC-AUC"]
    return "\n".join(
        [
            "Test split, fine-tuned model vs the TF-IDF + logistic-regression baseline fitted on the same "
            "rows (margin). F1 is the positive class's (binary) or micro-F1 (`categories`). Source: each "
            "run's `metrics.json`; every run in [docs/training.md](docs/training.md#measured-runs).",
            "",
            table(header, rows, "lllrrrr"),
        ]
    )


# -------------------- export: speed report

SYSTEMS = (
    ("pytorch_eager_fp32", "PyTorch eager fp32"),
    ("onnx_fp32_optimized", "ONNX fp32 (O2)"),
    ("onnx_int8", "ONNX int8, served"),
    ("onnx_int8_dynamic_batch_variant", "ONNX int8 dynamic (batch-variant, not served)"),
    ("onnx_int8_pad_to_longest", "ONNX int8 served, padded to longest (ablation)"),
)


def export_speed_section(sources: Sources) -> str:
    path = sources.path(sources.model_dir) / "bench.json"
    report = read_json(path)
    if report is None:
        return missing(f"export speed report (`{sources.model_dir.as_posix()}/bench.json`)", "make export")
    machine = report.get("machine", {})
    date = iso_date(report["created_at"]) if "created_at" in report else file_date(path)
    results = report.get("results", {})
    batches = sorted(results, key=int)
    header = ["system"]
    for batch in batches:
        header += [f"batch {batch} texts/s", f"batch {batch} p50 / p99 ms", f"batch {batch} × PyTorch"]
    rows = []
    for key, label in SYSTEMS:
        if not any(key in results[batch] for batch in batches):
            continue
        row = [label + (f" (`{report['served_quantization']}`)" if key == "onnx_int8" else "")]
        for batch in batches:
            figures = results[batch].get(key, {})
            ratio = report.get("ratios", {}).get(batch, {}).get(key)
            row += [
                number(figures.get("texts_per_second"), 1),
                f"{number(figures.get('p50_ms'), 1)} / {number(figures.get('p99_ms'), 1)}",
                "1" if key == "pytorch_eager_fp32" else f"{number(ratio, 2)}×",
            ]
        rows.append(row)
    targets = report.get("targets", {})
    met = report.get("targets_met", {})
    goals = ", ".join(
        f"batch {batch}: ≥ {number(targets[batch], 1)}× ({'met' if met.get(batch) else '**missed**'})"
        for batch in sorted(targets, key=int)
    )
    load = f"load average {number(machine.get('load_average_1m_before'), 1)} → " + number(
        machine.get("load_average_1m_after"), 1
    )
    return "\n".join(
        [
            source_line(sources, path, cpu=machine.get("cpu"), isa=machine.get("isa"), date=date),
            f"{number(machine.get('available_cores'), 0)} cores, {report.get('threads', '?')} threads "
            f"for every system, {report.get('num_texts', '?')} test messages, "
            f"{report.get('rounds', '?')} alternating rounds, {load}. {report.get('note', '')}.",
            "",
            table(header, rows, "l" + "rrr" * len(batches)),
            "",
            f"Served int8 / PyTorch targets: {goals}." if goals else "",
        ]
    ).rstrip()


def parity_section(sources: Sources) -> str:
    path = sources.path(sources.model_dir) / "parity.json"
    report = read_json(path)
    if report is None:
        return missing(f"parity report (`{sources.model_dir.as_posix()}/parity.json`)", "make export")
    manifest = read_json(sources.path(sources.model_dir) / "manifest.json") or {}
    quantization = manifest.get("quantization", {})
    date = iso_date(manifest["created_at"]) if "created_at" in manifest else file_date(path)
    limits = report.get("limits", {})
    rows = []
    for name, figures in report.get("candidates", {}).items():
        invariance = figures.get("batch_invariance", {})
        served = " (**served**)" if name == report.get("int8_candidate") else ""
        rows.append(
            [
                f"`{name}`{served}",
                number(figures.get("delta_f1_points"), 3),
                f"{number(_percent(figures.get('label_agreement')), 2)}%",
                f"{number(_percent(figures.get('size_ratio')), 1)}%",
                number(invariance.get("max_abs_score_diff"), 4)
                + ", "
                + number(invariance.get("label_flips"), 0),
                "; ".join(figures.get("failures", [])) or "passed",
            ]
        )
    fp32 = report.get("fp32", {}).get("max_abs_logit_diff")
    fp32_shown = f"{fp32:.1e}" if isinstance(fp32, int | float) else "–"
    return "\n".join(
        [
            source_line(sources, path, cpu=None, isa=quantization.get("isa"), date=date)
            + " The ISA is the one the bundle was quantized for (`manifest.json`); the date is the bundle's.",
            f"Bundle `{manifest.get('name')}` {manifest.get('version')}, {report.get('num_examples')} "
            f"`{report.get('split')}` messages; PyTorch vs ONNX fp32 max |Δlogit| {fp32_shown} "
            f"(limit {number(limits.get('max_abs_logit_diff'), 4)}); gate "
            f"{'passed' if report.get('passed') else '**failed**'}.",
            "",
            table(
                [
                    "int8 candidate",
                    f"|ΔF1| points (≤ {number(limits.get('max_delta_f1_points'), 1)})",
                    f"label agreement (≥ {number(_percent(limits.get('min_label_agreement')), 0)}%)",
                    f"size / fp32 (≤ {number(_percent(limits.get('max_size_ratio')), 0)}%)",
                    f"alone vs batched: max |Δscore| (≤ {limits.get('max_batch_score_diff')}), flips (0)",
                    "verdict",
                ],
                rows,
                "lrrrrl",
            ),
        ]
    )


# -------------------- make bench: HTTP report


def bench_section(sources: Sources) -> str:
    path = sources.path(sources.bench_dir) / "results.json"
    report = read_json(path)
    if report is None:
        return missing(f"`make bench` report (`{sources.bench_dir.as_posix()}/results.json`)", "make bench")
    machine = report.get("machine", {})
    model = report.get("model", {})
    date = iso_date(report["created_at"]) if "created_at" in report else file_date(path)
    end = machine.get("loadavg_at_end", {})
    parts = [
        source_line(sources, path, cpu=machine.get("cpu"), isa=machine.get("isa"), date=date),
        f"{number(machine.get('cores'), 0)} cores; bundle `{model.get('name')}` {model.get('version')} "
        f"(`{model.get('quantization', {}).get('mode')}`); command `{report.get('command')}`; load average "
        f"{number(machine.get('loadavg_1m_at_start'), 1)} at start, {number(end.get('5m'), 1)} over the "
        "last 5 minutes. Ratios come from the same run.",
        "",
    ]
    rows = []
    infinity_rows = []
    for level in report.get("comparison", []):
        ours, base = level.get("ours", {}), level.get("baseline", {})
        rows.append(
            [
                str(level.get("concurrency")),
                number(ours.get("throughput_rps"), 1),
                number(base.get("throughput_rps"), 1),
                f"{number(level.get('ratio', {}).get('throughput'), 2)}×",
                _latencies(ours),
                _latencies(base),
                f"{number(ours.get('server_cpu_ms_per_request'), 1)} / "
                f"{number(base.get('server_cpu_ms_per_request'), 1)}",
            ]
        )
        if "infinity" in level:
            inf = level["infinity"]
            infinity_rows.append(
                [
                    str(level.get("concurrency")),
                    number(ours.get("throughput_rps"), 1),
                    number(inf.get("throughput_rps"), 1),
                    f"{number(level.get('ratio_infinity', {}).get('throughput'), 2)}×",
                    _latencies(inf),
                    number(level.get("ratio_infinity", {}).get("p50"), 2),
                ]
            )
    parts.append(
        table(
            [
                "concurrency",
                "ours req/s",
                "PyTorch baseline req/s",
                "ours / baseline",
                "ours p50 / p95 / p99 ms",
                "baseline p50 / p95 / p99 ms",
                "server CPU ms/request ours / baseline",
            ],
            rows,
            "rrrrrrr",
        )
    )
    if infinity_rows:
        parts += [
            "",
            table(
                [
                    "concurrency",
                    "ours req/s",
                    "Infinity req/s",
                    "ours / Infinity",
                    "Infinity p50 / p95 / p99 ms",
                    "p50 ours / Infinity",
                ],
                infinity_rows,
                "rrrrrr",
            ),
        ]
    configs = [*report.get("batching", []), *report.get("sweep", [])]
    if configs:
        parts += [
            "",
            f"Our service at concurrency {report.get('sweep_concurrency', 32)}, same run:",
            "",
            table(
                ["configuration", "req/s", "p50 / p99 ms", "CPU ms/request"],
                [
                    [
                        str(config.get("label")),
                        number(config.get("throughput_rps"), 1),
                        f"{number(config.get('latency_ms', {}).get('p50'), 1)} / "
                        f"{number(config.get('latency_ms', {}).get('p99'), 1)}",
                        number(config.get("server_cpu_ms_per_request"), 1),
                    ]
                    for config in configs
                ],
                "lrrr",
            ),
        ]
    targets = report.get("targets", [])
    if targets:
        parts += [
            "",
            table(
                ["target (same run)", "measured", "bound", "verdict"],
                [
                    [
                        str(target.get("description")),
                        number(target.get("measured"), 3),
                        number(target.get("target"), 3),
                        "met" if target.get("met") else "**missed**",
                    ]
                    for target in targets
                ],
                "lrrl",
            ),
        ]
    engine = report.get("engine_same_run", {})
    if engine:
        parts += [
            "",
            f"In-process int8 engine, batch {engine.get('batch_size')}, same run: "
            f"{number(engine.get('texts_per_second'), 1)} texts/s.",
        ]
    return "\n".join(parts)


def _latencies(figures: JSON) -> str:
    latency = figures.get("latency_ms", {})
    return " / ".join(number(latency.get(key), 1) for key in ("p50", "p95", "p99"))


# -------------------- reliability: soak, overload


def latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def soak_section(sources: Sources) -> str:
    folder = sources.path(sources.reliability_dir)
    path = latest(folder, "soak-*.json")
    report = read_json(path) if path else None
    if path is None or report is None:
        return missing(f"soak report (`{sources.reliability_dir.as_posix()}/soak-<UTC>.json`)", "make soak")
    run = report.get("run", {})
    verdicts = report.get("verdicts", {})
    machine = report.get("machine", {})
    rows = [
        ["duration", f"{number(report.get('duration_s'), 0)} s"],
        [
            "offered rate",
            f"{number(report.get('rate'), 1)} req/s ({number(report.get('fraction'), 2)} × saturation "
            f"{number(report.get('saturation', {}).get('ok_rate'), 1)} req/s)",
        ],
        ["requests, statuses", f"{number(run.get('requests'), 0)}, {run.get('statuses')}"],
        ["errors", number(report.get("errors"), 0)],
        [
            "RSS warm → last-window peak",
            f"{_mib(report.get('rss_warm_bytes'))} → {_mib(report.get('rss_peak_last_bytes'))} MiB "
            f"({signed(_percent(report.get('rss_growth')), 1)}%)",
        ],
        [
            "p99 first → last window",
            f"{number(report.get('p99_first_ms'), 1)} → "
            f"{number(report.get('p99_last_ms'), 1)} ms ({signed(_percent(report.get('p99_drift')), 1)}%)",
        ],
        ["verdicts", _verdicts(verdicts)],
    ]
    return "\n".join(
        [
            source_line(sources, path, cpu=None, isa=None, date=_report_date(report, path)),
            f"{number(machine.get('cores'), 0)} cores; 1-minute load average at the end "
            f"{number(machine.get('load_average_1m_at_end'), 1)}; bundle "
            f"`{report.get('model', {}).get('name')}` {report.get('model', {}).get('version')}.",
            "",
            table(["figure", "value"], rows),
        ]
    )


def overload_section(sources: Sources) -> str:
    folder = sources.path(sources.reliability_dir)
    path = latest(folder, "overload-*.json")
    report = read_json(path) if path else None
    if path is None or report is None:
        command = "python -m loadtest.soak --model-dir models/disaster-related --overload"
        return missing(
            f"overload report (`{sources.reliability_dir.as_posix()}/overload-<UTC>.json`)", command
        )
    run = report.get("run", {})
    machine = report.get("machine", {})
    rows = [
        [
            "duration",
            f"{number(report.get('duration_s'), 0)} s at {number(report.get('factor'), 1)} × saturation",
        ],
        [
            "saturation; offered (sent)",
            f"{number(report.get('saturation_rps'), 1)} req/s; "
            f"{number(report.get('offered_rps'), 1)} ({number(report.get('sent_rps'), 1)}) req/s",
        ],
        ["statuses", str(run.get("statuses"))],
        [
            "p99 of the 200s",
            f"{number(report.get('p99_admitted_ms'), 0)} ms (deadline "
            f"{number(report.get('deadline_s'), 0)} s)",
        ],
        [
            "RSS warm → peak",
            f"{_mib(report.get('rss_warm_bytes'))} → {_mib(report.get('rss_peak_bytes'))} MiB "
            f"({signed(_percent(report.get('rss_peak_over_warm')), 1)}%)",
        ],
        ["back to normal after the load", f"{number(report.get('recovery_s'), 2)} s"],
        ["verdicts", _verdicts(report.get("verdicts", {}))],
    ]
    return "\n".join(
        [
            source_line(sources, path, cpu=None, isa=None, date=_report_date(report, path)),
            f"{number(machine.get('cores'), 0)} cores; 1-minute load average at the end "
            f"{number(machine.get('load_average_1m_at_end'), 1)}.",
            "",
            table(["figure", "value"], rows),
        ]
    )


def _report_date(report: JSON, path: Path) -> str:
    return iso_date(report["date"]) if "date" in report else file_date(path)


def _mib(value: Any) -> str:
    return number(value / 2**20, 1) if isinstance(value, int | float) else "–"


def _percent(value: Any) -> float | None:
    return value * 100 if isinstance(value, int | float) else None


def _verdicts(verdicts: JSON) -> str:
    if not verdicts:
        return "–"
    return ", ".join(f"{name} {'passed' if ok else '**failed**'}" for name, ok in verdicts.items())


# -------------------- deployment: compose-test


def compose_section(sources: Sources) -> str:
    path = sources.path(sources.compose_report)
    report = read_json(path)
    if report is None:
        return missing(f"compose-test report (`{sources.compose_report.as_posix()}`)", "make compose-test")
    steps = [[name, f"{number(seconds, 1)} s"] for name, seconds in report.get("steps_seconds", {}).items()]
    sizes = [[name, f"{number(size, 1)} MB"] for name, size in report.get("image_sizes_mb", {}).items()]
    parts = [
        source_line(sources, path, cpu=None, isa=None, date=file_date(path)),
        f"Docker daemon: {report.get('daemon', '?')}; whole run {number(report.get('total_seconds'), 0)} s.",
        "",
        table(["step", "time"], steps, "lr"),
    ]
    if sizes:
        parts += ["", table(["image", "size (uncompressed)"], sizes, "lr")]
    return "\n".join(parts)


# -------------------- tables generated from the code


def service_settings_section(sources: Sources) -> str:
    """Every service setting, from ``service/settings.py`` (the ``--help`` texts)."""
    import dataclasses

    from service.settings import Settings, env_name, flag_name

    rows = []
    for spec in dataclasses.fields(Settings):
        default = spec.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        shown = "(none)" if shown in ("", None) else shown
        rows.append(
            [f"`{flag_name(spec.name)}`", f"`{env_name(spec.name)}`", f"`{shown}`", spec.metadata["help"]]
        )
    return "Source: `service/settings.py`.\n\n" + table(
        ["flag", "environment variable", "default", "meaning"], rows
    )


def training_options_section(sources: Sources) -> str:
    from training.config import options_markdown

    return "Source: `training/config.py` (`python -m training.config --markdown`).\n\n" + options_markdown()


# -------------------- the writer

SECTIONS: dict[str, dict[str, Renderer]] = {
    "README.md": {"quality-summary": quality_summary_section},
    "docs/training.md": {
        "training-runs": training_runs_section,
        "training-options": training_options_section,
    },
    "docs/export.md": {"parity": parity_section},
    "docs/performance.md": {"export-speed": export_speed_section, "bench": bench_section},
    "docs/reliability.md": {"overload": overload_section, "soak": soak_section},
    "docs/deployment.md": {"compose-test": compose_section},
    "docs/api.md": {"service-settings": service_settings_section},
}


class MarkerError(ValueError):
    """A document lacks the begin/end markers of a section it should hold."""


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the markers of section ``name`` replaced by ``body``."""
    begin, end = f"<!-- generated:begin {name} -->", f"<!-- generated:end {name} -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise MarkerError(f"expected one '{begin}' ... '{end}' pair")
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def render(sources: Sources, doc: str, text: str) -> str:
    for name, renderer in SECTIONS[doc].items():
        try:
            text = replace_section(text, name, renderer(sources))
        except MarkerError as exc:
            raise MarkerError(f"{doc}: {exc}") from exc
    return text


def generate(sources: Sources, *, check: bool = False) -> list[str]:
    """Render every section; write the documents that changed (unless ``check``). Returns their names."""
    changed = []
    for doc in SECTIONS:
        path = sources.path(doc)
        old = path.read_text(encoding="utf-8")
        new = render(sources, doc, old)
        if new != old:
            changed.append(doc)
            if not check:
                path.write_text(new, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (%(default)s)")
    parser.add_argument("--model-dir", type=Path, default=Sources.model_dir, help="bundle (%(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is stale")
    args = parser.parse_args(argv)
    sources = Sources(root=args.root, model_dir=args.model_dir)
    try:
        changed = generate(sources, check=args.check)
    except MarkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "out of date" if args.check else "updated"
    print(f"docs: {verb}: {', '.join(changed)}" if changed else "docs: every generated section is current")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
