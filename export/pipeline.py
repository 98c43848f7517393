"""The export pipeline: run directory -> parity-gated, self-describing model bundle, written atomically.

Steps: export (optimum) -> fold ``token_type_ids`` -> optimize (O2) -> quantize both the optimized and the
plain graph to int8 -> parity gate on the run's test split (and pick the faster int8 candidate that passes)
-> speed report -> model card -> manifest with SHA-256 of every file -> verify -> rename into place.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from export import bench as bench_mod
from export.bundle import (
    BENCH_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    MODEL_FP32_FILE,
    PARITY_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    Bundle,
    Manifest,
    Quantization,
    checksum_files,
    load_bundle,
    verify_files,
    write_manifest,
)
from export.model_card import render_model_card
from export.onnx_export import export_onnx, fold_token_type_ids, graph_inputs, opset
from export.optimize import OPTIMIZATION_LEVEL, optimize_onnx
from export.parity import (
    GateFailedError,
    GateThresholds,
    compare_fp32,
    compare_int8,
    gate_failures,
    gold_matrix,
    limits_dict,
    onnx_logits,
    torch_logits,
)
from export.quantize import Isa, detect_isa, quantize_dynamic
from export.run import RunDir, load_run_dir
from service.engine import OnnxEngine, available_cores

log = logging.getLogger("export")

BENCH_PNG_FILE = "bench.png"
SOURCE_GRAPHS = ("optimized", "exported")


class BundleExistsError(FileExistsError):
    """The output folder exists and ``force`` was not given."""


@dataclass
class ExportOptions:
    """Everything ``python -m export`` can be told (each field is a CLI flag)."""

    run_dir: Path
    """Training run directory (docs/CONTRACTS.md section 2), e.g. ``artifacts/runs/latest``."""
    out: Path
    """Bundle folder to write, e.g. ``models/disaster-related``."""
    name: str | None = None
    """Model name in the manifest; defaults to the output folder's name."""
    force: bool = False
    """Replace an existing bundle at ``out`` (the old one stays until the new one is complete)."""
    allow_degraded: bool = False
    """Write the bundle even when the parity gate fails; recorded as ``degraded`` in the manifest."""
    isa: Isa | None = None
    """Quantization target; detected from the CPU when ``None``."""
    per_channel: bool = True
    """Quantize weights per output channel."""
    skip_layer_norm_fusion: bool = False
    """Let O2 fuse residual Add + LayerNorm into SkipLayerNormalization (slower here: see optimize.py)."""
    fold_token_types: bool = True
    """Fold token type 0 into the word embeddings and drop the ``token_type_ids`` input."""
    source_graphs: tuple[str, ...] = SOURCE_GRAPHS
    """fp32 graphs to quantize and compare: ``optimized`` (O2) and/or ``exported`` (plain)."""
    parity_sample: int | None = None
    """Compare on the first N test messages only (all of them when ``None``)."""
    limits: GateThresholds = field(default_factory=GateThresholds)
    threads: int | None = None
    """Threads for every system in the speed report (default: available cores)."""
    bench: bool = True
    """Write the speed report (bench.json, bench.png)."""
    bench_rounds: int = 5
    bench_texts: int = 256
    """Distinct test messages the speed report cycles through."""
    bench_batches_per_round: dict[int, int] | None = None
    """Timed calls per system per round, by batch size (default 40 at batch 1, 2 at batch 32)."""
    selection_texts: int = 64
    """Messages timed (batch 1) to pick the faster int8 candidate."""
    allow_spinning: bool = False
    """ONNX Runtime thread spinning for the engines the report measures (the service's default is off)."""


@contextmanager
def _step(name: str, timings: dict[str, float]) -> Iterator[None]:
    log.info("%s ...", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    log.info("%s done in %.2f s", name, timings[name])


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the bundle."""
    versions: dict[str, str] = {}
    for package in ("onnxruntime", "optimum-onnx", "optimum", "transformers", "torch", "tokenizers", "onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _pad_token_id(run: RunDir) -> int:
    import json

    config = json.loads((run.model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get("pad_token_id") or 0)


def _label_prior(run: RunDir) -> dict[str, float]:
    prior = run.data.get("label_prior") or {}
    return {str(label): float(share) for label, share in prior.items()}


def _manifest(
    run: RunDir, options: ExportOptions, inputs: list[str], *, model_opset: int, isa: Isa, source_graph: str
) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=options.name or options.out.name,
        version=run.run_id,
        base_model=run.base_model,
        task=run.task,
        problem_type=run.problem_type,
        labels=list(run.labels),
        thresholds=list(run.thresholds) if run.problem_type == "multi_label" and run.thresholds else None,
        max_length=run.max_length,
        truncation_side="left" if run.truncation_side == "left" else "right",
        pad_token_id=_pad_token_id(run),
        inputs=inputs,
        quantization=Quantization(
            mode="dynamic_int8",
            isa=isa,
            per_channel=options.per_channel,
            source_graph="optimized" if source_graph == "optimized" else "exported",
            optimization_level=OPTIMIZATION_LEVEL
            if options.skip_layer_norm_fusion
            else f"{OPTIMIZATION_LEVEL} without SkipLayerNormalization fusion",
        ),
        opset=model_opset,
        versions=library_versions(),
        files={},
        training_metrics=run.metrics,
        label_prior=_label_prior(run),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _batch1_speed(engine: OnnxEngine, texts: list[str]) -> float:
    """Texts/s at batch 1 through ``predict`` (a short measurement to rank int8 candidates)."""
    for text in texts[:4]:
        engine.predict([text])
    start = time.perf_counter()
    for text in texts:
        engine.predict([text])
    return len(texts) / (time.perf_counter() - start)


def _write_json(path: Path, value: object) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value, order="sorted"), indent=2) + b"\n")


def export_bundle(options: ExportOptions) -> Path:
    """Turn a training run into a bundle at ``options.out``; returns that path.

    Raises:
        BundleExistsError: ``out`` exists and ``force`` is off (checked before any work).
        GateFailedError: the parity gate failed and ``allow_degraded`` is off; nothing is written.
        RunDirError: the run directory lacks a file or has a malformed one.
    """
    out = Path(options.out)
    if out.exists() and not options.force:
        raise BundleExistsError(f"{out} exists; pass --force to replace it")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _step("read run directory", timings):
        run = load_run_dir(options.run_dir)
    isa: Isa = options.isa or detect_isa()
    threads = options.threads or available_cores()
    log.info(
        "run %s: %s %s, %d labels, %d test messages; int8 target %s, %d threads",
        run.run_id,
        run.task,
        run.problem_type,
        len(run.labels),
        len(run.test_examples),
        isa,
        threads,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    # The staging folder sits beside the target so the final rename stays on one filesystem (atomic).
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a service running as another user must read it
    work = Path(tempfile.mkdtemp(prefix="textclf-export-"))
    try:
        with _step("export to ONNX (optimum)", timings):
            exported = export_onnx(run.model_dir, work / "exported")
            folded = options.fold_token_types and fold_token_type_ids(exported)
        with _step(f"optimize ({OPTIMIZATION_LEVEL})", timings):
            optimized = optimize_onnx(
                work / "exported", work / "optimized", exported.name, options.skip_layer_norm_fusion
            )
        fp32_graphs = {"optimized": optimized, "exported": exported}
        candidates: dict[str, Path] = {}
        for source in options.source_graphs:
            # Quantizing rewrites shape annotations in place: quantize a copy, keep the fp32 graph pristine.
            source_dir = work / f"to-quantize-{source}"
            shutil.copytree(fp32_graphs[source].parent, source_dir)
            with _step(f"quantize the {source} graph (dynamic int8, {isa})", timings):
                candidates[source] = quantize_dynamic(
                    source_dir / fp32_graphs[source].name, work / f"int8-{source}", isa, options.per_channel
                )

        shutil.copyfile(run.model_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        shutil.copyfile(optimized, staging / MODEL_FP32_FILE)
        inputs = graph_inputs(optimized)
        manifest = _manifest(
            run, options, inputs, model_opset=opset(exported), isa=isa, source_graph=options.source_graphs[0]
        )
        staged = Bundle(path=staging, manifest=manifest)

        examples = run.test_examples[: options.parity_sample] if options.parity_sample else run.test_examples
        texts = [example.text for example in examples]
        gold = gold_matrix(examples, run.labels)
        multi_label = run.problem_type == "multi_label"
        with _step(f"parity: PyTorch on {len(texts)} test messages", timings):
            reference = torch_logits(run.model_dir, texts, run.max_length, run.truncation_side)
        with _step("parity: ONNX fp32", timings):
            fp32_engine = OnnxEngine(staged, threads, options.allow_spinning, model_file=MODEL_FP32_FILE)
            fp32_figures = compare_fp32(reference, onnx_logits(fp32_engine, texts))
        fp32_size = (staging / MODEL_FP32_FILE).stat().st_size

        candidate_reports: dict[str, dict[str, Any]] = {}
        for source, path in candidates.items():
            with _step(f"parity: int8 from the {source} graph", timings):
                shutil.copyfile(path, staging / MODEL_FILE)
                engine = OnnxEngine(staged, threads, options.allow_spinning)
                figures = compare_int8(
                    reference, onnx_logits(engine, texts), gold, multi_label, run.thresholds
                )
                size_ratio = path.stat().st_size / fp32_size
                failures = gate_failures(fp32_figures, figures, size_ratio, options.limits)
                speed = _batch1_speed(engine, texts[: options.selection_texts])
            candidate_reports[source] = {
                **figures,
                "size_bytes": path.stat().st_size,
                "size_ratio": size_ratio,
                "batch1_texts_per_second": speed,
                "failures": failures,
            }
            log.info(
                "int8 from %s: agreement %.4f, |dF1| %.3f points, size %.1f%% of fp32, %.0f texts/s batch 1",
                source,
                figures["label_agreement"],
                figures["delta_f1_points"],
                100 * size_ratio,
                speed,
            )
        passing = [s for s, r in candidate_reports.items() if not r["failures"]]
        pool = passing or list(candidate_reports)
        chosen = max(pool, key=lambda s: candidate_reports[s]["batch1_texts_per_second"])
        failures = candidate_reports[chosen]["failures"]
        int8_figures = {k: v for k, v in candidate_reports[chosen].items() if k != "failures"}
        parity_report: dict[str, Any] = {
            "num_examples": len(texts),
            "split": "test" if not options.parity_sample else f"test[:{options.parity_sample}]",
            "fp32": fp32_figures,
            "int8": int8_figures,
            "int8_source_graph": chosen,
            "candidates": candidate_reports,
            "limits": limits_dict(options.limits),
            "passed": not failures,
            "failures": failures,
            "fp32_size_bytes": fp32_size,
            "token_type_ids_folded": bool(folded),
            "skip_layer_norm_fusion": options.skip_layer_norm_fusion,
        }
        if failures and not options.allow_degraded:
            raise GateFailedError(failures, parity_report)
        if failures:
            log.warning("parity gate FAILED (%s); writing a degraded bundle", "; ".join(failures))
        shutil.copyfile(candidates[chosen], staging / MODEL_FILE)
        manifest.quantization.source_graph = "optimized" if chosen == "optimized" else "exported"
        manifest.parity = parity_report
        manifest.degraded = bool(failures)

        bench_report: dict[str, Any] | None = None
        if options.bench:
            with _step("speed report (PyTorch eager vs ONNX fp32 vs ONNX int8)", timings):
                bench_report = bench_mod.speed_report(
                    run,
                    staged,
                    threads=threads,
                    rounds=options.bench_rounds,
                    num_texts=options.bench_texts,
                    batches_per_round=options.bench_batches_per_round,
                    allow_spinning=options.allow_spinning,
                    isa=isa,
                )
            _write_json(staging / BENCH_FILE, bench_report)
            bench_mod.plot_bench(
                bench_report,
                staging / BENCH_PNG_FILE,
                f"{manifest.name} ({run.run_id}) on {bench_report['machine']['cpu']}, {threads} threads",
            )
        _write_json(staging / PARITY_FILE, parity_report)
        (staging / MODEL_CARD_FILE).write_text(
            render_model_card(manifest, run.data, bench_report), encoding="utf-8"
        )
        timings["total"] = round(time.perf_counter() - started, 3)
        parity_report["export_seconds"] = timings
        _write_json(staging / PARITY_FILE, parity_report)
        manifest.files = checksum_files(staging)
        manifest.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        write_manifest(staging, manifest)
        verify_files(load_bundle(staging))
        _replace(staging, out, options.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("bundle written to %s in %.1f s", out, time.perf_counter() - started)
    return out


def _replace(staging: Path, out: Path, force: bool) -> None:
    """Move the finished staging folder to ``out``; with ``force`` the old bundle is removed only after."""
    if not out.exists():
        os.replace(staging, out)
        return
    if not force:
        raise BundleExistsError(f"{out} exists; pass --force to replace it")
    previous = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, previous)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(previous, out)
        raise
    shutil.rmtree(previous, ignore_errors=True)
