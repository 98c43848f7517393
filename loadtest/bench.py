"""Side-by-side benchmark in one run: our service (int8 bundle) vs a PyTorch + FastAPI baseline (make bench).

::

    python -m loadtest.bench --model-dir models/disaster-related --run-dir artifacts/runs/latest

1. Starts our service (``python -m service``, default settings) on the bundle and the baseline
   (``loadtest/baselines/pytorch_fastapi.py``) on the same training run's PyTorch checkpoint, each on a free
   port, and checks one answer from each against the API's shape.
2. For each concurrency (1, 8, 32, 64), drives both in turn with the same closed-loop wrk load (one real
   message per request), alternating which goes first; every measurement is preceded by a warm-up at the same
   concurrency.
3. Measures our service alone with batching off (``--max-batch-size 1``) and over a small grid of ONNX
   Runtime threads x worker processes, at one concurrency (32).
4. Writes ``bench/results.json`` and ``bench/throughput_latency.png``, with the in-process int8 engine
   throughput from the bundle's ``bench.json`` (the serving-overhead ratio), the CPU the load generator used,
   and the issue's targets with their verdicts. Exits 1 if a target is missed (``--no-gate`` to only report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.ports import free_port
from export.bench import cpu_name
from export.bundle import BENCH_FILE, load_bundle
from loadtest.checks import check_classify, labels_from_info
from loadtest.messages import load_messages
from loadtest.servers import ServerError, ServerProcess, baseline_command, service_command
from loadtest.wrk import WrkError, run_wrk, write_bodies
from service.engine import available_cores

OURS = "ours"
BASELINE = "baseline"
DEFAULT_CONCURRENCY = (1, 8, 32, 64)
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
)


def baseline_checkpoint(run_dir: Path, bundle_version: str) -> Path:
    """The PyTorch checkpoint of the run the bundle was exported from.

    The bundle's version is its run id; when ``run_dir`` (e.g. ``artifacts/runs/latest``) points at a newer
    run, its sibling named like the version is used, so both sides serve the same trained weights.
    """
    if run_dir.resolve().name != bundle_version:
        sibling = run_dir.parent / bundle_version
        if (sibling / "model" / "config.json").is_file():
            print(
                f"bench: {run_dir} is not the bundle's run; using {sibling} (bundle version {bundle_version})"
            )
            return sibling / "model"
        print(
            f"bench: warning: {run_dir} is not the bundle's run ({bundle_version}) and that run is not found"
        )
    return run_dir / "model"


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def probe(server: ServerProcess, text: str) -> list[str]:
    """Check the server answers like the API says (so both targets do the same work); returns its labels."""
    labels = labels_from_info(get_json(server.url + "/info"))
    if labels is None:
        raise SystemExit(f"{server.name}: /info has no labels")
    problem = check_classify(get_json(server.url + "/classify", {"text": text}), 1, labels)
    if problem:
        raise SystemExit(f"{server.name}: POST /classify answered wrongly: {problem}")
    return labels


def measure(
    server: ServerProcess, bodies: Path, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """Warm up, then one measured closed-loop wrk run; adds the server's and the load generator's CPU use."""
    url = server.url + "/classify"
    if warmup_s > 0:
        run_wrk(url, concurrency, warmup_s, bodies)
    cpu_before = server.cpu_seconds()
    result = run_wrk(url, concurrency, duration_s, bodies)
    server_cpu = server.cpu_seconds() - cpu_before
    figures = result.to_dict()
    figures["server_cpu_cores"] = server_cpu / result.duration_s
    figures["loadgen_cpu_cores"] = result.cpu_seconds / result.duration_s
    figures["loadgen_cpu_share"] = result.cpu_seconds / (result.duration_s * available_cores())
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
    by_c = {row["concurrency"]: row for row in results["comparison"]}
    engine = results.get("engine_same_run") or {}
    values = {
        "throughput_ratio_c32": by_c[32]["ratio"]["throughput"] if 32 in by_c else math.nan,
        "p99_ratio_c32": by_c[32]["ratio"]["p99"] if 32 in by_c else math.nan,
        "serving_efficiency": (
            ratio(by_c[32][OURS]["throughput_rps"], engine["texts_per_second"])
            if 32 in by_c and engine
            else math.nan
        ),
        "p50_ms_c1": by_c[1][OURS]["latency_ms"]["p50"] if 1 in by_c else math.nan,
    }
    return [
        {
            "name": t.name,
            "description": t.description,
            "target": t.limit,
            "measured": values[t.name],
            "met": t.met(values[t.name]),
        }
        for t in TARGETS
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


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput, latency percentiles and ours/baseline ratios per concurrency; sweep as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["comparison"]
    levels = [row["concurrency"] for row in rows]
    x = range(len(levels))
    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    throughput, latency, ratios, sweep = axes.flat
    width = 0.38
    for offset, (name, label) in enumerate(
        ((OURS, "ours (ONNX int8, Litestar)"), (BASELINE, "PyTorch baseline"))
    ):
        values = [row[name]["throughput_rps"] for row in rows]
        bars = throughput.bar([i + (offset - 0.5) * width for i in x], values, width, label=label)
        throughput.bar_label(bars, fmt="%.0f", fontsize=8)
    if results.get("engine_same_run"):
        engine_rate = results["engine_same_run"]["texts_per_second"]
        throughput.axhline(
            engine_rate, color="gray", ls="--", label="in-process int8 engine, batch 32 (same run)"
        )
    if results.get("engine_export_report"):
        report_rate = results["engine_export_report"]["best"]
        throughput.axhline(
            report_rate, color="gray", ls=":", label="in-process int8 engine (bench.json, export)"
        )
    throughput.set_xticks(list(x), [str(c) for c in levels])
    throughput.set_xlabel("concurrent connections (closed loop)")
    throughput.set_ylabel("requests/s (one message each)")
    throughput.set_title("Throughput")
    throughput.legend(fontsize=8)

    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for name, color in ((OURS, "C0"), (BASELINE, "C1")):
        for key, style in styles.items():
            values = [row[name]["latency_ms"][key] for row in rows]
            latency.plot(levels, values, style, color=color, marker="o", label=f"{name} {key}")
    latency.set_xscale("log", base=2)
    latency.set_yscale("log")
    latency.set_xticks(levels, [str(c) for c in levels])
    latency.set_xlabel("concurrent connections")
    latency.set_ylabel("latency (ms)")
    latency.set_title("Latency percentiles")
    latency.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=7, ncol=2)

    for key, color in (("throughput", "C2"), ("p50", "C0"), ("p99", "C3"), ("cpu_ms_per_request", "C4")):
        ratios.plot(
            levels, [row["ratio"][key] for row in rows], marker="o", color=color, label=f"{key} ours/baseline"
        )
    ratios.axhline(4.0, color="C2", ls=":", lw=1, label="throughput target (4x)")
    ratios.axhline(1 / 3, color="C3", ls=":", lw=1, label="p99 target (1/3)")
    ratios.set_xscale("log", base=2)
    ratios.set_yscale("log")
    ratios.set_xticks(levels, [str(c) for c in levels])
    ratios.set_xlabel("concurrent connections")
    ratios.set_title("Ratios ours / baseline")
    ratios.grid(True, which="both", alpha=0.3)
    ratios.legend(fontsize=7)

    configs = results.get("batching", []) + results.get("sweep", [])
    if configs:
        labels = [config["label"] for config in configs]
        values = [config["throughput_rps"] for config in configs]
        bars = sweep.barh(range(len(labels)), values, color="C0")
        sweep.bar_label(bars, labels=[f"{v:.0f} req/s, p99 {c['latency_ms']['p99']:.0f} ms" for v, c in
                                      zip(values, configs, strict=True)], fontsize=7)  # fmt: skip
        sweep.set_xlim(0, max(values) * 1.5)  # room for the labels
        sweep.set_yticks(range(len(labels)), labels, fontsize=8)
        sweep.invert_yaxis()
        sweep.set_xlabel("requests/s")
        sweep.set_title(f"Our service at concurrency {results['sweep_concurrency']}: settings")
    else:
        sweep.axis("off")
    figure.suptitle(
        f"make bench: {results['machine']['cores']} cores, {results['machine']['cpu']}", fontsize=10
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_table(results: dict[str, Any]) -> None:
    print(
        "\n| concurrency | ours req/s | baseline req/s | ratio | ours p50 / p95 / p99 ms "
        "| baseline p50 / p95 / p99 ms | server CPU ms/request ours / baseline |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["comparison"]:
        o, b = row[OURS], row[BASELINE]
        print(
            f"| {row['concurrency']} | {o['throughput_rps']:.1f} | {b['throughput_rps']:.1f} | "
            f"{row['ratio']['throughput']:.2f}x | "
            f"{o['latency_ms']['p50']:.1f} / {o['latency_ms']['p95']:.1f} / {o['latency_ms']['p99']:.1f} | "
            f"{b['latency_ms']['p50']:.1f} / {b['latency_ms']['p95']:.1f} / {b['latency_ms']['p99']:.1f} | "
            f"{o['server_cpu_ms_per_request']:.1f} / {b['server_cpu_ms_per_request']:.1f} |"
        )
    if results.get("engine_same_run"):
        engine = results["engine_same_run"]
        print(
            f"in-process int8 engine, batch {engine['batch_size']}: "
            f"{engine['texts_per_second']:.1f} texts/s (same run)"
        )
    if results.get("batching") or results.get("sweep"):
        print(f"\nour service at concurrency {results['sweep_concurrency']}:")
        for config in results.get("batching", []) + results.get("sweep", []):
            latency = config["latency_ms"]
            print(
                f"  {config['label']:<34} {config['throughput_rps']:7.1f} req/s  "
                f"p50 {latency['p50']:.1f} ms  p99 {latency['p99']:.1f} ms  "
                f"CPU {config['server_cpu_ms_per_request']:.1f} ms/request"
            )
    print("\ntargets:")
    for target in results["targets"]:
        verdict = "met   " if target["met"] else "MISSED"
        print(
            f"  {verdict} {target['description']}: {target['measured']:.3g} (target {target['target']:.3g})"
        )
    efficiency = results.get("serving_cpu_efficiency", math.nan)
    print(
        f"  (CPU-based serving efficiency at c=32: engine CPU/text / service CPU/request = {efficiency:.2f})"
    )
    share = results["load_generator"]["mean_cpu_share"]
    print(f"load generator (wrk) CPU: {share:.1%} of the machine on average")


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    bundle = load_bundle(args.model_dir)
    baseline_model = baseline_checkpoint(args.run_dir, bundle.manifest.version)
    if not (baseline_model / "config.json").is_file():
        raise SystemExit(
            f"{baseline_model}: no PyTorch checkpoint (config.json) for the baseline; run make train"
        )
    messages = load_messages(limit=args.messages)
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(({"text": text} for text in messages.texts), args.out / "bodies.jsonl")
    logs = args.out / "logs"
    started = time.monotonic()
    cores = available_cores()
    print(f"bench: {len(messages.texts)} messages from {messages.source}; {cores} cores ({cpu_name()})")

    results: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtest.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cores": available_cores(),
            "cpu": cpu_name(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure; the load average says how busy it was.
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
        "model": {
            "bundle": str(args.model_dir),
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
        },
        "baseline": {
            "model_dir": str(baseline_model),
            "design": "FastAPI + PyTorch eager fp32, one forward pass per request",
        },
        "load": {
            "tool": "wrk (closed loop, 1 thread)",
            "request": 'POST /classify {"text": <one message>}',
            "messages": len(messages.texts),
            "messages_source": str(messages.source),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "engine_export_report": engine_throughput(args.model_dir),
        "comparison": [],
        "batching": [],
        "sweep": [],
        "failed_configs": [],
        "sweep_concurrency": args.sweep_concurrency,
    }

    port = free_port()
    ours = ServerProcess("ours (ONNX int8)", service_command(args.model_dir, port), port, logs / "ours.log")
    port = free_port()
    baseline = ServerProcess(
        "baseline (PyTorch)", baseline_command(baseline_model, port, bundle.manifest.max_length), port,
        logs / "baseline.log",
    )  # fmt: skip
    sample = messages.texts[0]
    from service.engine import OnnxEngine

    # The service's default engine settings (ONNX Runtime on every core), idle except when measured.
    engine = OnnxEngine(bundle)
    engine_runs: list[dict[str, Any]] = []
    with ours, baseline:
        probe(ours, sample)
        probe(baseline, sample)
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {
            c: {OURS: [], BASELINE: []} for c in args.concurrency
        }
        for round_index in range(args.rounds):
            for index, concurrency in enumerate(args.concurrency):
                # Alternate who goes first, so drift on the shared machine does not favour one side.
                order = [(OURS, ours), (BASELINE, baseline)]
                if (index + round_index) % 2:
                    order.reverse()
                for name, server in order:
                    runs[concurrency][name].append(
                        measure(server, bodies, concurrency, args.warmup, args.duration)
                    )
                if concurrency == args.sweep_concurrency:
                    # Next to the HTTP figure it is compared with, so both see the same background load.
                    engine_runs.append(
                        engine_same_run(engine, messages.texts, args.sweep_concurrency, args.duration)
                    )
        results["engine_same_run"] = (
            {
                key: statistics.median(run[key] for run in engine_runs)
                for key in ("texts_per_second", "cpu_cores", "cpu_ms_per_text")
            }
            | {"batch_size": args.sweep_concurrency, "runs": len(engine_runs)}
            if engine_runs
            else None
        )
        for concurrency, by_name in runs.items():
            row: dict[str, Any] = {"concurrency": concurrency}
            for name, measured in by_name.items():
                row[name] = median_figures(measured)
            row["ratio"] = compare(row[OURS], row[BASELINE])
            results["comparison"].append(row)

    if not args.no_sweep:
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
            log = logs / f"sweep-{number}.log"
            server = ServerProcess(label, service_command(args.model_dir, port, **settings), port, log)
            try:
                with server:
                    figures = measure(server, bodies, c, args.warmup, args.duration)
            except (ServerError, WrkError) as exc:
                # One configuration that does not start is a finding, not a reason to lose the whole run.
                print(f"  {label}: failed: {exc}", flush=True)
                results["failed_configs"].append({"label": label, "settings": settings, "error": str(exc)})
                continue
            results[section].append({"label": label, "settings": settings, "concurrency": c, **figures})

    results["targets"] = evaluate_targets(results)
    results["serving_cpu_efficiency"] = serving_cpu_efficiency(results)
    measurements = [row[name] for row in results["comparison"] for name in (OURS, BASELINE)]
    measurements += results["batching"] + results["sweep"]
    results["load_generator"] = {
        "tool": "wrk",
        "mean_cpu_share": sum(m["loadgen_cpu_share"] for m in measurements) / len(measurements),
        "max_cpu_share": max(m["loadgen_cpu_share"] for m in measurements),
        "note": "share of all cores' time the wrk process used during measured runs (it shares the machine)",
    }
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = dict(zip(("1m", "5m", "15m"), os.getloadavg(), strict=True))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, args.out / "throughput_latency.png")
    print_table(results)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'throughput_latency.png'}")
    missed = [t["description"] for t in results["targets"] if not t["met"]]
    return 1 if missed and not args.no_gate else 0


if __name__ == "__main__":
    sys.exit(main())
