"""Side-by-side benchmark in one run: our service (int8 bundle) vs a PyTorch + FastAPI baseline and vs
Infinity serving the same int8 graph (make bench).

::

    python -m loadtest.bench --model-dir models/disaster-related --run-dir artifacts/runs/latest

1. Starts our service (``python -m service``, default settings) on the bundle, the baseline
   (``loadtest/baselines/pytorch_fastapi.py``) on the same training run's PyTorch checkpoint, and Infinity
   (``loadtest/infinity.py``: its own venv, created on first use, serving the bundle's ``model.onnx``), each
   on a free port. Checks one answer from each against its API's shape, and that Infinity gives the same
   labels and scores as ours on the same messages.
2. For each concurrency (1, 8, 32, 64), drives them in turn with the same closed-loop wrk load (one real
   message per request), rotating which goes first; every measurement is preceded by a warm-up at the same
   concurrency. Infinity runs at 1 and 32 only (``--infinity-concurrency``).
3. Measures our service alone with batching off (``--max-batch-size 1``) and over a small grid of ONNX
   Runtime threads x worker processes, at one concurrency (32).
4. Writes ``bench/results.json``, ``bench/report.md`` and ``bench/throughput_latency.png``: the CPU model and
   instruction set, the load average, the in-process int8 engine throughput (the serving-overhead ratio), the
   CPU the load generator used, and the issue's targets with their verdicts, all as same-run ratios. Exits 1
   if a target is missed (``--no-gate`` to only report).

When ``TEXTCLF_API_KEY`` (or ``TEXTCLF_API_KEY_FILE``) is set, our service started here requires it, every
request carries it, and Infinity is given the same key (``--api-key``'s variable), so all do the same work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from core.bundle import BENCH_FILE, load_bundle
from core.host import cpu_name, detect_isa, free_port, isa_flags, usable_cores
from core.process import NotReadyError, ServerProcess
from core.run_dir import MODEL_DIR
from core.service_command import service_command
from loadtest import infinity
from loadtest.auth import ApiKey, ApiKeyError, api_key_from_env
from loadtest.checks import check_classify, labels_from_info
from loadtest.messages import Messages, load_messages
from loadtest.servers import baseline_command, cpu_seconds
from loadtest.wrk import WrkError, run_wrk, write_bodies

OURS = "ours"
BASELINE = "baseline"
INFINITY = "infinity"
DEFAULT_CONCURRENCY = (1, 8, 32, 64)
DEFAULT_INFINITY_CONCURRENCY = (1, 32)
# Messages sent one at a time to ours and to Infinity to check they serve the same model the same way.
AGREEMENT_MESSAGES = 64
# Grid for the defaults: ONNX Runtime intra-op threads x server processes (2 cores here).
SWEEP = ((1, 1), (2, 1), (1, 2), (2, 2))


@dataclass(frozen=True)
class Target:
    """One of the issue's goals, as a same-run ratio or bound."""

    name: str
    description: str
    limit: float
    higher_is_better: bool

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.limit if self.higher_is_better else value <= self.limit


TARGETS = (
    Target("throughput_ratio_c32", "throughput at concurrency 32, ours / baseline", 4.0, True),
    Target("p99_ratio_c32", "p99 latency at concurrency 32, ours / baseline", 1 / 3, False),
    Target(
        "serving_efficiency",
        "HTTP throughput at concurrency 32 / in-process int8 engine (same run)",
        0.75,
        True,
    ),
    Target("p50_ms_c1", "p50 latency at concurrency 1 (ms)", 10.0, False),
    Target(
        "infinity_throughput_ratio_c32",
        "throughput at concurrency 32, ours / Infinity (same int8 graph)",
        1.5,
        True,
    ),
    Target("infinity_p50_ratio_c1", "p50 latency at concurrency 1, ours / Infinity", 0.6, False),
)
INFINITY_TARGETS = frozenset({"infinity_throughput_ratio_c32", "infinity_p50_ratio_c1"})
# Issue 11's per-ISA floor for int8 over PyTorch one text at a time: int8 gains less without VNNI. (Its
# batch-32 floors, 3x and 2.5x, are below the 4x target at concurrency 32 above, which covers them.)
C1_RATIO_BY_ISA = {"avx512_vnni": 5.0}
C1_RATIO_WITHOUT_VNNI = 3.0


def isa_target(isa: str | None) -> Target:
    """The concurrency-1 ours/baseline floor for the instruction set the run had."""
    limit = C1_RATIO_BY_ISA.get(isa or "", C1_RATIO_WITHOUT_VNNI)
    return Target(
        "throughput_ratio_c1",
        f"throughput at concurrency 1, ours / baseline (floor for {isa or 'unknown ISA'})",
        limit,
        True,
    )


def baseline_checkpoint(run_dir: Path, bundle_version: str) -> Path:
    """The PyTorch checkpoint of the run the bundle was exported from.

    The bundle's version is its run id; when ``run_dir`` (e.g. ``artifacts/runs/latest``) points at a newer
    run, its sibling named like the version is used, so both sides serve the same trained weights.
    """
    if run_dir.resolve().name != bundle_version:
        sibling = run_dir.parent / bundle_version
        if (sibling / MODEL_DIR / "config.json").is_file():
            print(
                f"bench: {run_dir} is not the bundle's run; using {sibling} (bundle version {bundle_version})"
            )
            return sibling / MODEL_DIR
        print(
            f"bench: warning: {run_dir} is not the bundle's run ({bundle_version}) and that run is not found"
        )
    return run_dir / MODEL_DIR


def get_json(url: str, body: dict[str, Any] | None = None, key: ApiKey | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(key.headers() if key else {})}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def probe(server: ServerProcess, text: str, key: ApiKey | None = None) -> list[str]:
    """Check the server answers like the API says (so both targets do the same work); returns its labels."""
    labels = labels_from_info(get_json(server.url + "/info", key=key))
    if labels is None:
        raise SystemExit(f"{server.name}: /info has no labels")
    problem = check_classify(get_json(server.url + "/classify", {"text": text}, key), 1, labels)
    if problem:
        raise SystemExit(f"{server.name}: POST /classify answered wrongly: {problem}")
    return labels


def compare_with_infinity(
    ours: ServerProcess, peer: ServerProcess, texts: list[str], labels: list[str], key: ApiKey | None
) -> dict[str, Any]:
    """Send the same messages one at a time to both (batch 1 on each side, so dynamic int8's batch dependence
    plays no part) and compare labels and scores: the evidence that Infinity serves our graph faithfully.
    Messages our service truncated are left out: Infinity's pipeline does not truncate them."""
    pairs: list[tuple[tuple[str, float], tuple[str, float]]] = []
    truncated = 0
    for text in texts:
        (result,) = get_json(ours.url + "/classify", {"text": text}, key)["results"]
        if result["truncated"]:
            truncated += 1
            continue
        theirs = infinity.top_label(get_json(peer.url + "/classify", infinity.request_body(text), key))
        if isinstance(theirs, str):
            raise SystemExit(f"{peer.name}: POST /classify answered wrongly: {theirs}")
        if theirs[0] not in labels:
            raise SystemExit(f"{peer.name}: label {theirs[0]!r} is not one of the bundle's labels {labels}")
        pairs.append(((result["label"], float(result["score"])), theirs))
    return infinity.agreement(pairs) | {"skipped_truncated": truncated}


def messages_over_limit(tokenizer_path: Path, texts: list[str], max_length: int) -> int:
    """How many messages have more tokens than the bundle's ``max_length`` (ours truncates them; Infinity's
    classification pipeline does not, so it does more work on exactly these)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return sum(len(encoding.ids) > max_length for encoding in tokenizer.encode_batch(texts))


def measure(
    server: ServerProcess,
    bodies: Path,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    *,
    api_key: ApiKey | None = None,
) -> dict[str, Any]:
    """Warm up, then one measured closed-loop wrk run; adds the server's and the load generator's CPU use."""
    url = server.url + "/classify"
    authorization = api_key.headers()["Authorization"] if api_key else None
    if warmup_s > 0:
        run_wrk(url, concurrency, warmup_s, bodies, authorization=authorization)
    cpu_before = cpu_seconds(server)
    result = run_wrk(url, concurrency, duration_s, bodies, authorization=authorization)
    server_cpu = cpu_seconds(server) - cpu_before
    figures = result.to_dict()
    figures["server_cpu_cores"] = server_cpu / result.duration_s
    figures["loadgen_cpu_cores"] = result.cpu_seconds / result.duration_s
    figures["loadgen_cpu_share"] = result.cpu_seconds / (result.duration_s * usable_cores())
    # CPU time per answered request: unlike req/s, it barely moves when other work shares the machine.
    answered = result.throughput_rps * result.duration_s
    figures["server_cpu_ms_per_request"] = 1000 * server_cpu / answered if answered else math.nan
    line = (
        f"  {server.name:<28} c={concurrency:<3} {result.throughput_rps:8.1f} req/s  "
        f"p50 {result.latency_ms['p50']:8.1f} ms  p95 {result.latency_ms['p95']:8.1f}  "
        f"p99 {result.latency_ms['p99']:8.1f}  errors {result.error_count}  "
        f"server CPU {figures['server_cpu_cores']:.2f} cores, wrk {figures['loadgen_cpu_cores']:.2f}"
    )
    print(line, flush=True)
    return figures


def engine_throughput(bundle_dir: Path) -> dict[str, Any] | None:
    """In-process int8 texts/s per batch size from the bundle's speed report, and the best of them."""
    path = bundle_dir / BENCH_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    per_batch = {
        size: systems["onnx_int8"]["texts_per_second"]
        for size, systems in report.get("results", {}).items()
        if "onnx_int8" in systems
    }
    if not per_batch:
        return None
    return {"source": str(path), "texts_per_second_by_batch": per_batch, "best": max(per_batch.values())}


def median_figures(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over repeated measurements (error counts are summed); one measurement is
    returned as is. Each run's figures are kept under ``each``."""
    if len(measured) == 1:
        return {**measured[0], "runs": 1}
    out: dict[str, Any] = {"runs": len(measured), "each": measured}
    for key, value in measured[0].items():
        if key == "errors":
            out[key] = {name: sum(m[key][name] for m in measured) for name in value}
        elif isinstance(value, dict):
            out[key] = {name: statistics.median(m[key][name] for m in measured) for name in value}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(m[key] for m in measured)
    return out


def engine_same_run(engine: Any, texts: list[str], batch_size: int, duration_s: float) -> dict[str, Any]:
    """In-process int8 throughput measured now, on this machine's current load, with the service's defaults
    (``OnnxEngine.predict``, tokenization included, ONNX Runtime on every core). The serving-overhead ratio
    uses this figure: the speed report in ``bench.json`` was measured at export time, under other load."""
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    for chunk in chunks[:3]:
        engine.predict(chunk, max_batch_size=batch_size)  # warm-up
    done = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s:
        for chunk in chunks:
            engine.predict(chunk, max_batch_size=batch_size)
            done += len(chunk)
            if time.perf_counter() - start >= duration_s:
                break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    figures = {
        "batch_size": batch_size,
        "texts_per_second": done / elapsed,
        "cpu_cores": cpu / elapsed,
        "cpu_ms_per_text": 1000 * cpu / done,
    }
    print(
        f"  in-process int8 engine       batch {batch_size:<3} {figures['texts_per_second']:8.1f} texts/s  "
        f"CPU {figures['cpu_cores']:.2f} cores",
        flush=True,
    )
    return figures


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def compare(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Ours over baseline: throughput (higher is better) and latency percentiles (lower is better)."""
    out = {
        "throughput": ratio(ours["throughput_rps"], baseline["throughput_rps"]),
        "cpu_ms_per_request": ratio(ours["server_cpu_ms_per_request"], baseline["server_cpu_ms_per_request"]),
    }
    for key in ("p50", "p95", "p99"):
        out[key] = ratio(ours["latency_ms"][key], baseline["latency_ms"][key])
    return out


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's same-run value and verdict. A target whose figure is missing is missed, except the
    Infinity ones when the run was told to skip Infinity (``--no-infinity``): those are reported as skipped
    (``met`` is ``None``) and do not fail the gate. Infinity failing to install or start is a miss."""
    by_c = {row["concurrency"]: row for row in results["comparison"]}
    engine = results.get("engine_same_run") or {}

    def infinity_ratio(concurrency: int, key: str) -> float:
        row = by_c.get(concurrency, {})
        return row["ratio_infinity"][key] if "ratio_infinity" in row else math.nan

    values = {
        "throughput_ratio_c32": by_c[32]["ratio"]["throughput"] if 32 in by_c else math.nan,
        "p99_ratio_c32": by_c[32]["ratio"]["p99"] if 32 in by_c else math.nan,
        "serving_efficiency": (
            ratio(by_c[32][OURS]["throughput_rps"], engine["texts_per_second"])
            if 32 in by_c and engine
            else math.nan
        ),
        "p50_ms_c1": by_c[1][OURS]["latency_ms"]["p50"] if 1 in by_c else math.nan,
        "infinity_throughput_ratio_c32": infinity_ratio(32, "throughput"),
        "infinity_p50_ratio_c1": infinity_ratio(1, "p50"),
        "throughput_ratio_c1": by_c[1]["ratio"]["throughput"] if 1 in by_c else math.nan,
    }
    targets = (*TARGETS, isa_target(results.get("machine", {}).get("isa")))
    skipped = (results.get("infinity") or {}).get("status") == "skipped"
    return [
        {
            "name": t.name,
            "description": t.description,
            "target": t.limit,
            "measured": values[t.name],
            "met": None if skipped and t.name in INFINITY_TARGETS else t.met(values[t.name]),
        }
        for t in targets
    ]


def serving_cpu_efficiency(results: dict[str, Any]) -> float:
    """In-process engine CPU per text / service CPU per request at concurrency 32: the serving overhead in CPU
    terms. Throughput ratios move with whatever else runs on a shared machine; CPU per unit of work barely
    does, so this is the figure to trust when the load average was high."""
    by_c = {row["concurrency"]: row for row in results["comparison"]}
    engine = results.get("engine_same_run")
    if 32 not in by_c or not engine:
        return math.nan
    return ratio(engine["cpu_ms_per_text"], by_c[32][OURS]["server_cpu_ms_per_request"])


SERVER_LABELS = {
    OURS: "ours (ONNX int8, Litestar)",
    BASELINE: "PyTorch + FastAPI baseline",
    INFINITY: "Infinity (same int8 graph)",
}


def machine_line(results: dict[str, Any]) -> str:
    """CPU model, instruction set and load, for titles and the report: every figure depends on them."""
    machine = results["machine"]
    load = machine.get("loadavg_at_end", {})
    return (
        f"{machine['cores']} cores, {machine['cpu']}, ISA {machine.get('isa', '?')}; load average "
        f"{machine['loadavg_1m_at_start']:.1f} at start, {load.get('5m', math.nan):.1f} over the last 5 min"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput, latency percentiles and ratios per concurrency; sweep as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["comparison"]
    servers = [name for name in (OURS, BASELINE, INFINITY) if any(name in row for row in rows)]
    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    throughput, latency, ratios, sweep = axes.flat
    _plot_throughput(throughput, results, servers)
    _plot_latency(latency, rows, servers)
    _plot_ratios(ratios, rows)
    _plot_sweep(sweep, results)
    figure.suptitle(f"make bench: {machine_line(results)}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_throughput(ax: Any, results: dict[str, Any], servers: list[str]) -> None:
    rows = results["comparison"]
    levels = [row["concurrency"] for row in rows]
    x = range(len(levels))
    width = 0.8 / len(servers)
    for offset, name in enumerate(servers):
        positions = [i + (offset - (len(servers) - 1) / 2) * width for i, row in zip(x, rows, strict=True)
                     if name in row]  # fmt: skip
        values = [row[name]["throughput_rps"] for row in rows if name in row]
        bars = ax.bar(positions, values, width, label=SERVER_LABELS[name], color=f"C{offset}")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    if results.get("engine_same_run"):
        engine_rate = results["engine_same_run"]["texts_per_second"]
        ax.axhline(engine_rate, color="gray", ls="--", label="in-process int8 engine, batch 32 (same run)")
    if results.get("engine_export_report"):
        report_rate = results["engine_export_report"]["best"]
        ax.axhline(report_rate, color="gray", ls=":", label="in-process int8 engine (bench.json, export)")
    ax.set_xticks(list(x), [str(c) for c in levels])
    ax.set_xlabel("concurrent connections (closed loop)")
    ax.set_ylabel("requests/s (one message each)")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)


def _plot_latency(ax: Any, rows: list[dict[str, Any]], servers: list[str]) -> None:
    levels = [row["concurrency"] for row in rows]
    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for number, name in enumerate(servers):
        measured = [row for row in rows if name in row]
        for key, style in styles.items():
            values = [row[name]["latency_ms"][key] for row in measured]
            ax.plot([row["concurrency"] for row in measured], values, style, color=f"C{number}",
                    marker="o", label=f"{name} {key}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(servers))


def _plot_ratios(ax: Any, rows: list[dict[str, Any]]) -> None:
    levels = [row["concurrency"] for row in rows]
    for key, color in (("throughput", "C2"), ("p50", "C0"), ("p99", "C3"), ("cpu_ms_per_request", "C4")):
        ax.plot(
            levels, [row["ratio"][key] for row in rows], marker="o", color=color, label=f"{key} ours/baseline"
        )
    with_peer = [row for row in rows if "ratio_infinity" in row]
    peer_levels = [row["concurrency"] for row in with_peer]
    for key, color in (("throughput", "C2"), ("p50", "C0")):
        if with_peer:
            ax.plot(peer_levels, [row["ratio_infinity"][key] for row in with_peer], marker="s", ls="--",
                    color=color, label=f"{key} ours/Infinity")  # fmt: skip
    ax.axhline(4.0, color="C2", ls=":", lw=1, label="throughput target vs baseline (4x)")
    ax.axhline(1 / 3, color="C3", ls=":", lw=1, label="p99 target vs baseline (1/3)")
    if with_peer:
        ax.axhline(1.5, color="C2", ls="-.", lw=1, label="throughput target vs Infinity (1.5x)")
        ax.axhline(0.6, color="C0", ls="-.", lw=1, label="p50 target vs Infinity at c=1 (0.6)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent connections")
    ax.set_title("Ratios (same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best", framealpha=0.6)


def _plot_sweep(ax: Any, results: dict[str, Any]) -> None:
    configs = results.get("batching", []) + results.get("sweep", [])
    if configs:
        labels = [config["label"] for config in configs]
        values = [config["throughput_rps"] for config in configs]
        bars = ax.barh(range(len(labels)), values, color="C0")
        ax.bar_label(bars, labels=[f"{v:.0f} req/s, p99 {c['latency_ms']['p99']:.0f} ms" for v, c in
                                   zip(values, configs, strict=True)], fontsize=7)  # fmt: skip
        ax.set_xlim(0, max(values) * 1.5)  # room for the labels
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("requests/s")
        ax.set_title(f"Our service at concurrency {results['sweep_concurrency']}: settings")
    else:
        ax.axis("off")


def _latencies(figures: dict[str, Any]) -> str:
    latency = figures["latency_ms"]
    return f"{latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f}"


def failed_measurements(results: dict[str, Any]) -> list[str]:
    """A line per measurement with errors or no answers at all: its figures mean little, its log says why."""
    lines = []
    for row in results["comparison"]:
        for name in (OURS, BASELINE, INFINITY):
            figures = row.get(name)
            if figures is None:
                continue
            errors = sum(figures["errors"].values())
            if errors or figures["throughput_rps"] == 0:
                lines.append(
                    f"- **{name} at concurrency {row['concurrency']}: {errors} errors, "
                    f"{figures['throughput_rps']:.1f} answers/s** ({figures['errors']}; see logs/{name}.log)"
                )
    return ["", *lines] if lines else []


def report_markdown(results: dict[str, Any]) -> str:
    """The run as Markdown (``bench/report.md``, also printed): machine, tables, targets."""
    machine = results["machine"]
    flags = machine["flags"]
    model = results["model"]
    lines = [
        "# make bench",
        "",
        f"- Machine: {machine_line(results)}.",
        "- CPU flags: " + ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in flags.items()),
        f"- Bundle: `{model['bundle']}` ({model['name']} {model['version']}), "
        f"quantization {model['quantization']}",
        f"- Command: `{results['command']}` ({results['created_at']}, {results.get('elapsed_s', 0):.0f} s)",
        "",
        "| concurrency | ours req/s | baseline req/s | ours / baseline | ours p50 / p95 / p99 ms "
        "| baseline p50 / p95 / p99 ms | server CPU ms/request ours / baseline |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["comparison"]:
        o, b = row[OURS], row[BASELINE]
        lines.append(
            f"| {row['concurrency']} | {o['throughput_rps']:.1f} | {b['throughput_rps']:.1f} | "
            f"{row['ratio']['throughput']:.2f}x | {_latencies(o)} | {_latencies(b)} | "
            f"{o['server_cpu_ms_per_request']:.1f} / {b['server_cpu_ms_per_request']:.1f} |"
        )
    peer = results.get("infinity") or {}
    with_peer = [row for row in results["comparison"] if INFINITY in row]
    lines.append("")
    if with_peer:
        lines += [
            f"Infinity {peer.get('env', {}).get('infinity_emb', '')} serving the same graph "
            f"({peer.get('graph', '')}):",
            "",
            "| concurrency | ours req/s | Infinity req/s | ours / Infinity | ours p50 / p95 / p99 ms "
            "| Infinity p50 / p95 / p99 ms | p50 ours / Infinity | server CPU ms/request ours / Infinity |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in with_peer:
            o, i = row[OURS], row[INFINITY]
            lines.append(
                f"| {row['concurrency']} | {o['throughput_rps']:.1f} | {i['throughput_rps']:.1f} | "
                f"{row['ratio_infinity']['throughput']:.2f}x | {_latencies(o)} | {_latencies(i)} | "
                f"{row['ratio_infinity']['p50']:.2f} | "
                f"{o['server_cpu_ms_per_request']:.1f} / {i['server_cpu_ms_per_request']:.1f} |"
            )
        if agreement := peer.get("agreement"):
            lines.append(
                "\nSame messages one at a time to both: label agreement "
                f"{agreement['label_agreement']:.1%} on {agreement['messages']} messages, "
                f"largest score gap {agreement['max_abs_score_diff']:.2g}."
            )
        if "messages_over_limit" in peer:
            lines.append(
                f"{peer['messages_over_limit']} of {results['load']['messages']} messages exceed max_length "
                f"{model['max_length']} tokens: ours truncates them, Infinity's pipeline does not."
            )
    else:
        lines.append(f"Infinity: {peer.get('status', 'not run')} {peer.get('error', '')}".rstrip())
    if results.get("engine_same_run"):
        engine = results["engine_same_run"]
        lines.append(
            f"\nIn-process int8 engine, batch {engine['batch_size']}: "
            f"{engine['texts_per_second']:.1f} texts/s (same run)."
        )
    if results.get("batching") or results.get("sweep"):
        lines += [
            "",
            f"Our service at concurrency {results['sweep_concurrency']}:",
            "",
            "| configuration | req/s | p50 / p99 ms | CPU ms/request |",
            "|---|---:|---:|---:|",
        ]
        for config in results.get("batching", []) + results.get("sweep", []):
            latency = config["latency_ms"]
            lines.append(
                f"| {config['label']} | {config['throughput_rps']:.1f} | {latency['p50']:.1f} / "
                f"{latency['p99']:.1f} | {config['server_cpu_ms_per_request']:.1f} |"
            )
    lines += failed_measurements(results)
    lines += ["", "| target (same run) | measured | target | verdict |", "|---|---:|---:|---|"]
    for target in results["targets"]:
        verdict = {True: "met", False: "**MISSED**", None: "skipped"}[target["met"]]
        lines.append(
            f"| {target['description']} | {target['measured']:.3g} | {target['target']:.3g} | {verdict} |"
        )
    efficiency = results.get("serving_cpu_efficiency", math.nan)
    share = results["load_generator"]["mean_cpu_share"]
    lines += [
        "",
        f"CPU-based serving efficiency at c=32 (engine CPU/text / service CPU/request): {efficiency:.2f}.",
        f"Load generator (wrk) CPU: {share:.1%} of the machine on average.",
    ]
    return "\n".join(lines) + "\n"


def start_infinity(
    args: argparse.Namespace, bundle: Any, checkpoint: Path, messages: list[str], key: ApiKey | None
) -> tuple[ServerProcess | None, dict[str, Any]]:
    """Make the venv and the model folder and build the server (started by the caller). On failure returns
    ``None`` and the reason, so the run goes on and reports the Infinity targets as missed."""
    record: dict[str, Any] = {
        "graph": f"the bundle's {bundle.model_path.name} as {infinity.ONNX_NAME}, with the checkpoint's "
        "config and tokenizer; started in that folder with --model-id . --engine optimum "
        "--onnx-disable-optimize --device cpu --no-model-warmup",
        "design": "Infinity defaults otherwise (dynamic batching, batch size 32, one text per pipeline call)",
        # What differs from ours below the HTTP layer, so the ratio is read for what it is.
        "session": "optimum's ONNX Runtime defaults: every graph optimization, including the "
        "SkipLayerNormalization fusion ours disables (so scores differ slightly), intra-op threads = all "
        "cores, spinning threads",
    }
    try:
        env = infinity.ensure_venv(args.infinity_venv, args.torch_index_url)
        model_dir = infinity.prepare_model_dir(
            checkpoint, bundle.model_path, (args.out / "infinity-model").resolve(), bundle.manifest.max_length
        )
    except (infinity.InfinityError, OSError, subprocess.CalledProcessError) as exc:
        print(f"bench: Infinity not run: {exc}", flush=True)
        return None, record | {"status": "failed", "error": str(exc)}
    record |= {"status": "started", "env": env.describe(), "model_dir": str(model_dir)}
    record["messages_over_limit"] = messages_over_limit(
        bundle.tokenizer_path, messages, bundle.manifest.max_length
    )
    port = free_port()
    server = ServerProcess(
        f"Infinity {infinity.INFINITY_VERSION}",
        infinity.server_command(env, port),
        port,
        args.out / "logs" / "infinity.log",
        env=infinity.server_env(key.value if key else None),
        ready_path="/health",
        ready_timeout_s=300.0,
        cwd=model_dir,
    )
    return server, record


def idle_cpu(servers: list[ServerProcess], seconds: float = 3.0) -> dict[str, float]:
    """Each server's CPU use while nobody sends it anything: a server that burns CPU idle slows the others'
    measurements on a 2-core machine, so the figure goes into the results."""
    before = {server.name: cpu_seconds(server) for server in servers}
    time.sleep(seconds)
    return {server.name: (cpu_seconds(server) - before[server.name]) / seconds for server in servers}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/disaster-related"), help="int8 bundle")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("artifacts/runs/latest"),
        help="training run (its model/ is the baseline)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output folder (%(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCY))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement (%(default)s)")
    parser.add_argument("--warmup", type=float, default=4.0, help="warm-up seconds before each (%(default)s)")
    parser.add_argument("--sweep-concurrency", type=int, default=32, help="concurrency of the settings sweep")
    parser.add_argument("--no-sweep", action="store_true", help="skip batching off/on and the threads sweep")
    parser.add_argument("--messages", type=int, default=2000, help="distinct messages cycled through")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the comparison; medians are reported (%(default)s)"
    )
    parser.add_argument("--no-gate", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument(
        "--no-infinity", action="store_true", help="skip the Infinity comparison (its targets: skipped)"
    )
    parser.add_argument(
        "--infinity-concurrency",
        type=int,
        nargs="+",
        default=list(DEFAULT_INFINITY_CONCURRENCY),
        help="concurrencies Infinity is measured at (%(default)s; each must be in --concurrency)",
    )
    parser.add_argument(
        "--infinity-venv",
        type=Path,
        default=infinity.DEFAULT_VENV,
        help="Infinity's own venv, created when missing (%(default)s)",
    )
    parser.add_argument(
        "--torch-index-url",
        help="CPU wheel index for torch in the Infinity venv, used only if plain pip would pull CUDA "
        f"(default: $TORCH_INDEX_URL or {infinity.DEFAULT_TORCH_INDEX_URL})",
    )
    return parser.parse_args(argv)


@dataclass
class Inputs:
    """What every step of a benchmark run reads: the options, the bundle, the baseline, the request bodies."""

    args: argparse.Namespace
    bundle: Any
    baseline_model: Path
    messages: Messages
    bodies: Path
    peer_bodies: Path
    api_key: ApiKey | None

    @property
    def logs(self) -> Path:
        return Path(self.args.out) / "logs"


def prepare(args: argparse.Namespace) -> Inputs:
    """Check the bundle, the baseline checkpoint and the API key; write the request bodies."""
    try:
        api_key = api_key_from_env()
    except ApiKeyError as exc:
        raise SystemExit(f"error: {exc}") from exc
    bundle = load_bundle(args.model_dir)
    baseline_model = baseline_checkpoint(args.run_dir, bundle.manifest.version)
    if not (baseline_model / "config.json").is_file():
        raise SystemExit(
            f"{baseline_model}: no PyTorch checkpoint (config.json) for the baseline; run make train"
        )
    messages = load_messages(limit=args.messages)
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(({"text": text} for text in messages.texts), args.out / "bodies.jsonl")
    peer_bodies = write_bodies(
        (infinity.request_body(text) for text in messages.texts), args.out / "bodies-infinity.jsonl"
    )
    return Inputs(args, bundle, baseline_model, messages, bodies, peer_bodies, api_key)


def describe_run(inputs: Inputs, argv: list[str] | None) -> dict[str, Any]:
    """The results' header: command, machine, model, baseline and load; the measured sections start empty."""
    args, manifest, messages, api_key = inputs.args, inputs.bundle.manifest, inputs.messages, inputs.api_key
    isa = detect_isa()
    print(
        f"bench: {len(messages.texts)} messages from {messages.source}; {usable_cores()} cores "
        f"({cpu_name()}, {isa})"
    )
    if api_key is not None:
        print(f"bench: sending the API key from {api_key.source}")
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtest.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cores": usable_cores(),
            "cpu": cpu_name(),
            # The int8 kernels ONNX Runtime picks, and so every ratio here, depend on these.
            "isa": isa,
            "flags": isa_flags(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure; the load average says how busy it was.
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
        "model": {
            "bundle": str(args.model_dir),
            "name": manifest.name,
            "version": manifest.version,
            "max_length": manifest.max_length,
            "quantization": msgspec.to_builtins(manifest.quantization),
        },
        "baseline": {
            "model_dir": str(inputs.baseline_model),
            "design": "FastAPI + PyTorch eager fp32, one forward pass per request",
        },
        "load": {
            "tool": "wrk (closed loop, 1 thread)",
            "request": 'POST /classify {"text": <one message>}',
            "messages": len(messages.texts),
            "messages_source": str(messages.source),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "api_key": api_key.source if api_key else None,
        },
        "engine_export_report": engine_throughput(args.model_dir),
        "comparison": [],
        "batching": [],
        "sweep": [],
        "failed_configs": [],
        "sweep_concurrency": args.sweep_concurrency,
    }


def compare_servers(inputs: Inputs, results: dict[str, Any]) -> None:
    """Ours, the PyTorch baseline and (unless skipped) Infinity side by side at each concurrency, with the
    engine alone measured next to the sweep concurrency; fills ``comparison``, ``engine_same_run``,
    ``idle_cpu_cores`` and ``infinity``."""
    args, bundle, api_key = inputs.args, inputs.bundle, inputs.api_key
    port = free_port()
    ours = ServerProcess(
        "ours (ONNX int8)", service_command(args.model_dir, port), port, inputs.logs / "ours.log"
    )
    port = free_port()
    baseline = ServerProcess(
        "baseline (PyTorch)", baseline_command(inputs.baseline_model, port, bundle.manifest.max_length), port,
        inputs.logs / "baseline.log",
    )  # fmt: skip
    peer: ServerProcess | None = None
    if args.no_infinity:
        results["infinity"] = {"status": "skipped", "error": "--no-infinity"}
    else:
        peer, results["infinity"] = start_infinity(
            args, bundle, inputs.baseline_model, inputs.messages.texts, api_key
        )
    from core.engine import OnnxEngine

    # The service's default engine settings (ONNX Runtime on every core), idle except when measured.
    engine = OnnxEngine(bundle)
    with contextlib.ExitStack() as stack:
        stack.enter_context(ours)
        stack.enter_context(baseline)
        labels = probe(ours, inputs.messages.texts[0], api_key)
        probe(baseline, inputs.messages.texts[0], api_key)
        if peer is not None:
            peer = start_peer(stack, peer, ours=ours, labels=labels, inputs=inputs, results=results)
        servers = [ours, baseline] + ([peer] if peer else [])
        results["idle_cpu_cores"] = idle_cpu(servers)
        runs, engine_runs = measure_rounds(inputs, ours, baseline, peer, engine)
    results["engine_same_run"] = (
        {
            key: statistics.median(run[key] for run in engine_runs)
            for key in ("texts_per_second", "cpu_cores", "cpu_ms_per_text")
        }
        | {"batch_size": args.sweep_concurrency, "runs": len(engine_runs)}
        if engine_runs
        else None
    )
    results["comparison"] += comparison_rows(runs)


def start_peer(
    stack: contextlib.ExitStack,
    peer: ServerProcess,
    *,
    ours: ServerProcess,
    labels: list[str],
    inputs: Inputs,
    results: dict[str, Any],
) -> ServerProcess | None:
    """Start Infinity and check it agrees with ours; None (and the reason in ``results``) if it fails."""
    try:
        stack.enter_context(peer)
        results["infinity"]["agreement"] = compare_with_infinity(
            ours, peer, inputs.messages.texts[:AGREEMENT_MESSAGES], labels, inputs.api_key
        )
        results["infinity"]["status"] = "measured"
    except (NotReadyError, OSError) as exc:
        print(f"bench: Infinity did not start: {exc}", flush=True)
        results["infinity"] |= {"status": "failed", "error": str(exc)}
        return None
    return peer


Runs = dict[int, dict[str, list[dict[str, Any]]]]
"""Concurrency -> server name -> the figures of each round."""


def measure_rounds(
    inputs: Inputs, ours: ServerProcess, baseline: ServerProcess, peer: ServerProcess | None, engine: Any
) -> tuple[Runs, list[dict[str, Any]]]:
    """Every round at every concurrency, servers in rotating order; the engine alone next to the sweep
    concurrency."""
    args, api_key = inputs.args, inputs.api_key
    measured_here = [OURS, BASELINE] + ([INFINITY] if peer else [])
    runs: Runs = {
        c: {name: [] for name in measured_here if name != INFINITY or c in args.infinity_concurrency}
        for c in args.concurrency
    }
    engine_runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for index, concurrency in enumerate(args.concurrency):
            targets = [(OURS, ours, inputs.bodies), (BASELINE, baseline, inputs.bodies)]
            if peer is not None and INFINITY in runs[concurrency]:
                targets.append((INFINITY, peer, inputs.peer_bodies))
            # Rotate who goes first, so drift on the shared machine does not favour one side.
            shift = (index + round_index) % len(targets)
            for name, server, server_bodies in targets[shift:] + targets[:shift]:
                runs[concurrency][name].append(
                    measure(server, server_bodies, concurrency, args.warmup, args.duration, api_key=api_key)
                )
            if concurrency == args.sweep_concurrency:
                # Next to the HTTP figure it is compared with, so both see the same background load.
                engine_runs.append(
                    engine_same_run(engine, inputs.messages.texts, args.sweep_concurrency, args.duration)
                )
    return runs, engine_runs


def comparison_rows(runs: Runs) -> list[dict[str, Any]]:
    """One row per concurrency: each server's median figures and ours over the others."""
    rows = []
    for concurrency, by_name in runs.items():
        row: dict[str, Any] = {"concurrency": concurrency}
        for name, measured in by_name.items():
            row[name] = median_figures(measured)
        row["ratio"] = compare(row[OURS], row[BASELINE])
        if INFINITY in row:
            row["ratio_infinity"] = compare(row[OURS], row[INFINITY])
        rows.append(row)
    return rows


def sweep_settings(inputs: Inputs, results: dict[str, Any]) -> None:
    """Batching off and on, then the ORT threads x workers grid, each a fresh service at the sweep
    concurrency; fills ``batching``, ``sweep`` and ``failed_configs``."""
    args = inputs.args
    c = args.sweep_concurrency
    configs: list[tuple[str, str, dict[str, object]]] = [
        ("batching", "batching off (max batch size 1)", {"max_batch_size": 1}),
        ("batching", "batching on (default settings)", {}),
    ]
    configs += [
        (
            "sweep",
            f"ORT threads {threads} x {workers} worker(s)",
            {"ort_threads": threads, "workers": workers},
        )
        for threads, workers in SWEEP
    ]
    for number, (section, label, settings) in enumerate(configs):
        port = free_port()
        log = inputs.logs / f"sweep-{number}.log"
        server = ServerProcess(label, service_command(args.model_dir, port, **settings), port, log)
        try:
            with server:
                figures = measure(
                    server, inputs.bodies, c, args.warmup, args.duration, api_key=inputs.api_key
                )
        except (NotReadyError, WrkError) as exc:
            # One configuration that does not start is a finding, not a reason to lose the whole run.
            print(f"  {label}: failed: {exc}", flush=True)
            results["failed_configs"].append({"label": label, "settings": settings, "error": str(exc)})
            continue
        results[section].append({"label": label, "settings": settings, "concurrency": c, **figures})


def conclude(results: dict[str, Any], elapsed_s: float) -> None:
    """The target verdicts, the serving CPU efficiency, the load generator's share and the end's load."""
    results["targets"] = evaluate_targets(results)
    results["serving_cpu_efficiency"] = serving_cpu_efficiency(results)
    measurements = [
        row[name] for row in results["comparison"] for name in (OURS, BASELINE, INFINITY) if name in row
    ]
    measurements += results["batching"] + results["sweep"]
    results["load_generator"] = {
        "tool": "wrk",
        "mean_cpu_share": sum(m["loadgen_cpu_share"] for m in measurements) / len(measurements),
        "max_cpu_share": max(m["loadgen_cpu_share"] for m in measurements),
        "note": "share of all cores' time the wrk process used during measured runs (it shares the machine)",
    }
    results["elapsed_s"] = round(elapsed_s, 1)
    results["machine"]["loadavg_at_end"] = dict(zip(("1m", "5m", "15m"), os.getloadavg(), strict=True))


def write_reports(results: dict[str, Any], out: Path) -> None:
    """``results.json``, ``throughput_latency.png`` and ``report.md`` (also printed)."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, out / "throughput_latency.png")
    report = report_markdown(results)
    (out / "report.md").write_text(report, encoding="utf-8")
    print("\n" + report)
    print(f"wrote {out}/results.json, report.md and throughput_latency.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = prepare(args)
    started = time.monotonic()
    results = describe_run(inputs, argv)
    compare_servers(inputs, results)
    if not args.no_sweep:
        sweep_settings(inputs, results)
    conclude(results, time.monotonic() - started)
    write_reports(results, args.out)
    missed = [t["description"] for t in results["targets"] if t["met"] is False]
    return 1 if missed and not args.no_gate else 0


if __name__ == "__main__":
    sys.exit(main())
