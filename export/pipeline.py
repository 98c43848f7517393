"""The export pipeline: run directory -> parity-gated, self-describing model bundle, written atomically.

Steps: export (optimum) -> fold ``token_type_ids`` -> optimize (O2) -> int8 candidates (static, weight-only,
dynamic: see ``export.quantize``) -> parity gate on the run's test split, including batch invariance, and pick
the fastest candidate that passes -> speed report -> model card -> manifest with SHA-256 of every file ->
verify -> rename into place.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np

from core.bundle import (
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
from core.engine import OnnxEngine
from core.host import Isa, detect_isa, usable_cores
from core.run_dir import RunDir, load_run_dir, read_examples
from export import bench as bench_mod
from export.model_card import render_model_card
from export.onnx_export import export_onnx, fold_token_type_ids, graph_inputs, opset
from export.optimize import OPTIMIZATION_LEVEL, optimize_onnx
from export.parity import (
    GateFailedError,
    GateThresholds,
    batch_invariance,
    compare_fp32,
    compare_int8,
    gate_failures,
    gold_matrix,
    limits_dict,
    onnx_logits,
    torch_logits,
)
from export.quantize import (
    BATCH_INVARIANT_MODES,
    DEFAULT_QUANT_MODES,
    ISA_SETTINGS,
    QuantMode,
    quantize_dynamic,
    quantize_static,
    quantize_weight_only,
)

log = logging.getLogger("export")

BENCH_PNG_FILE = "bench.png"
SOURCE_GRAPHS = ("optimized", "exported")
UNFUSED_ATTENTION = "optimized_unfused_attention"
"""The O2 graph without attention fusion: what the static modes quantize (see export/optimize.py)."""
CALIBRATION_TEXTS = 256
"""Validation messages whose activation ranges fix the static int8 scales (min/max, moving average)."""


class BundleExistsError(FileExistsError):
    """The output folder exists and ``force`` was not given."""


@dataclass
class ExportOptions:
    """Everything ``python -m export`` can be told (each field is a CLI flag)."""

    run_dir: Path
    """Training run directory (docs/contracts.md section 2), e.g. ``artifacts/runs/latest``."""
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
    quant_modes: tuple[QuantMode, ...] = DEFAULT_QUANT_MODES
    """int8 modes to build and measure (``export.quantize``); the fastest eligible one is served."""
    allow_batch_variant: bool = False
    """Let a batch-variant mode (``dynamic_int8``) be served when it is fastest: faster, but a text's scores
    then depend on the other texts in its batch. Off by default; recorded in the manifest either way."""
    skip_layer_norm_fusion: bool = False
    """Let O2 fuse residual Add + LayerNorm into SkipLayerNormalization (slower here: see optimize.py)."""
    fold_token_types: bool = True
    """Fold token type 0 into the word embeddings and drop the ``token_type_ids`` input."""
    source_graphs: tuple[str, ...] = ("optimized",)
    """fp32 graphs ``dynamic_int8`` quantizes: ``optimized`` (O2) and/or ``exported`` (plain). The static
    modes start from O2 without attention fusion, weight-only from the plain export."""
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
    invariance_sample: int = 512
    """Test messages the batch-invariance check scores alone and in batches (each costs one session run)."""
    selection_texts: int = 64
    """Messages timed (at batch 1 and in batches of 32) to pick the fastest int8 candidate."""
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
    config = json.loads((run.model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get("pad_token_id") or 0)


def _label_prior(run: RunDir) -> dict[str, float]:
    prior = run.data.get("label_prior") or {}
    return {str(label): float(share) for label, share in prior.items()}


def _manifest(
    run: RunDir, options: ExportOptions, inputs: list[str], *, model_opset: int, isa: Isa
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
        # Filled in once the parity gate has picked a candidate.
        quantization=Quantization(mode="none", isa=isa, per_channel=options.per_channel),
        opset=model_opset,
        versions=library_versions(),
        files={},
        training_metrics=run.metrics,
        label_prior=_label_prior(run),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _selection_speed(engine: OnnxEngine, texts: list[str]) -> dict[str, float]:
    """Texts/s through ``predict`` at batch 1 and in batches of 32 (a short run to rank candidates)."""
    engine.predict(texts[:32])
    speeds: dict[str, float] = {}
    for size in (1, 32):
        start = time.perf_counter()
        for first in range(0, len(texts), size):
            engine.predict(texts[first : first + size])
        speeds[f"batch{size}_texts_per_second"] = len(texts) / (time.perf_counter() - start)
    # One figure to rank by: the geometric mean weighs a quiet service (batch 1) and a busy one alike.
    speeds["rank_texts_per_second"] = float(
        np.sqrt(speeds["batch1_texts_per_second"] * speeds["batch32_texts_per_second"])
    )
    return speeds


def _quantization(
    options: ExportOptions, isa: Isa, mode: QuantMode, source: str, report: dict[str, Any]
) -> Quantization:
    """The manifest's record of how ``model.onnx`` was made and what it was measured to do."""
    settings = ISA_SETTINGS[isa]
    weight_only = mode == "weight_only_int8"
    return Quantization(
        mode=mode,
        isa=isa,
        per_channel=options.per_channel and not weight_only,
        source_graph=source,  # type: ignore[arg-type]  # one of the graphs the pipeline builds
        optimization_level=None
        if source == "exported"
        else ", ".join(
            [OPTIMIZATION_LEVEL]
            + ([] if options.skip_layer_norm_fusion else ["without SkipLayerNormalization fusion"])
            + (["without attention fusion"] if source == UNFUSED_ATTENTION else [])
        ),
        activation_type=None if weight_only else settings.activation_type,
        weight_type="int8" if weight_only else settings.weight_type,
        reduce_range=settings.reduce_range,
        calibration=f"min/max over {CALIBRATION_TEXTS} validation messages"
        if mode == "static_int8"
        else None,
        batch_invariant=report["batch_invariance"]["invariant"],
    )


class _Candidate(NamedTuple):
    """One int8 graph the parity gate judges."""

    mode: QuantMode
    source: str
    """The fp32 graph it was quantized from (a key of ``_Fp32Graphs.by_source``)."""
    path: Path


@dataclass(frozen=True)
class _Job:
    """What every step of one export shares."""

    run: RunDir
    options: ExportOptions
    isa: Isa
    threads: int
    staging: Path
    """The bundle being written: beside ``out``, so the final rename stays on one filesystem (atomic)."""
    work: Path
    """Scratch folder for the intermediate graphs, removed at the end."""
    timings: dict[str, float]
    """Seconds per step, recorded in parity.json."""


@dataclass(frozen=True)
class _Fp32Graphs:
    exported: Path
    optimized: Path
    folded: bool
    """Whether ``token_type_ids`` was folded away."""
    by_source: dict[str, Path]
    """The graphs the int8 modes quantize, by source name."""


@dataclass(frozen=True)
class _TestSplit:
    """The messages the gate judges on, and the PyTorch and fp32 figures every candidate is held to."""

    texts: list[str]
    gold: np.ndarray
    reference: np.ndarray
    """PyTorch logits."""
    fp32_figures: dict[str, float]
    fp32_size: int


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
    threads = options.threads or usable_cores()
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
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a service running as another user must read it
    work = Path(tempfile.mkdtemp(prefix="textclf-export-"))
    job = _Job(run, options, isa, threads, staging, work, timings)
    try:
        graphs = _export_fp32_graphs(job)
        staged = _stage_fp32(job, graphs)
        fp32_engine = OnnxEngine(staged, threads, options.allow_spinning, model_file=MODEL_FP32_FILE)
        candidates = _build_candidates(
            options,
            fp32_graphs=graphs.by_source,
            work=work,
            isa=isa,
            calibration=partial(_validation_feeds, run, fp32_engine),
            timings=timings,
        )
        split = _parity_baseline(job, fp32_engine)
        reports = {name: _judge(job, staged, name, cand, split) for name, cand in candidates.items()}
        parity_report = _apply_gate(
            job, staged, candidates=candidates, reports=reports, split=split, folded=graphs.folded
        )
        bench_report = _write_speed_report(job, staged, candidates) if options.bench else None
        _write_reports_and_manifest(job, staged, parity_report, bench_report, started)
        _replace(staging, out, options.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("bundle written to %s in %.1f s", out, time.perf_counter() - started)
    return out


def _export_fp32_graphs(job: _Job) -> _Fp32Graphs:
    """optimum export, ``token_type_ids`` folded, O2, and O2 without attention fusion for the static modes."""
    options, work = job.options, job.work
    with _step("export to ONNX (optimum)", job.timings):
        exported = export_onnx(job.run.model_dir, work / "exported")
        folded = options.fold_token_types and fold_token_type_ids(exported)
    with _step(f"optimize ({OPTIMIZATION_LEVEL})", job.timings):
        optimized = optimize_onnx(
            work / "exported", work / "optimized", exported.name, options.skip_layer_norm_fusion
        )
    by_source = {"optimized": optimized, "exported": exported}
    if any(mode.startswith("static_int8") for mode in options.quant_modes):
        with _step(f"optimize ({OPTIMIZATION_LEVEL} without attention fusion, for static int8)", job.timings):
            by_source[UNFUSED_ATTENTION] = optimize_onnx(
                work / "exported",
                work / UNFUSED_ATTENTION,
                exported.name,
                options.skip_layer_norm_fusion,
                attention_fusion=False,
            )
    return _Fp32Graphs(exported=exported, optimized=optimized, folded=folded, by_source=by_source)


def _stage_fp32(job: _Job, graphs: _Fp32Graphs) -> Bundle:
    """The staging folder as a bundle with the tokenizer, the fp32 graph and a manifest still to be filled."""
    shutil.copyfile(job.run.model_dir / TOKENIZER_FILE, job.staging / TOKENIZER_FILE)
    shutil.copyfile(graphs.optimized, job.staging / MODEL_FP32_FILE)
    manifest = _manifest(
        job.run, job.options, graph_inputs(graphs.optimized), model_opset=opset(graphs.exported), isa=job.isa
    )
    return Bundle(path=job.staging, manifest=manifest)


def _validation_feeds(run: RunDir, fp32_engine: OnnxEngine) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds from validation messages: held out from training and from the gate's test split."""
    validation = read_examples(run.path / "eval" / "validation.jsonl")[:CALIBRATION_TEXTS]
    return _calibration_feeds(fp32_engine, [example.text for example in validation])


def _calibration_feeds(engine: OnnxEngine, texts: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """One text per feed, tokenized as the service does, so padding never enters the calibrated ranges."""
    for item in engine.tokenize(texts):
        ids = item.ids.reshape(1, -1)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in engine.manifest.inputs:  # bundles exported with --keep-token-type-ids
            feeds["token_type_ids"] = np.zeros_like(ids)
        yield feeds


def _build_candidates(
    options: ExportOptions,
    *,
    fp32_graphs: dict[str, Path],
    work: Path,
    isa: Isa,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
    timings: dict[str, float],
) -> dict[str, _Candidate]:
    """Quantize the fp32 graphs in every requested mode; returns the candidates by ``mode/source`` name."""
    candidates: dict[str, _Candidate] = {}
    for mode in options.quant_modes:
        sources = {
            "dynamic_int8": options.source_graphs,
            "weight_only_int8": ("exported",),
        }.get(mode, (UNFUSED_ATTENTION,))
        for source in sources:
            name = f"{mode}/{source}"
            # Quantizers annotate shapes in place: work on a copy, keep the fp32 graph pristine.
            source_dir = work / f"to-quantize-{mode}-{source}"
            shutil.copytree(fp32_graphs[source].parent, source_dir)
            source_path = source_dir / fp32_graphs[source].name
            out_path = work / f"{mode}-{source}.onnx"
            with _step(f"quantize the {source} graph ({mode}, {isa})", timings):
                if mode == "dynamic_int8":
                    quantize_dynamic(source_path, out_path, isa, options.per_channel)
                elif mode in ("static_int8", "static_int8_ffn_weight_only"):
                    quantize_static(
                        source_path,
                        out_path,
                        calibration(),
                        isa,
                        per_channel=options.per_channel,
                        ffn_weight_only=mode == "static_int8_ffn_weight_only",
                    )
                else:
                    quantize_weight_only(source_path, out_path)
            candidates[name] = _Candidate(mode, source, out_path)
    return candidates


def _parity_baseline(job: _Job, fp32_engine: OnnxEngine) -> _TestSplit:
    """PyTorch logits on the test split, and how far the fp32 ONNX graph strays from them."""
    run, sample = job.run, job.options.parity_sample
    examples = run.test_examples[:sample] if sample else run.test_examples
    texts = [example.text for example in examples]
    with _step(f"parity: PyTorch on {len(texts)} test messages", job.timings):
        reference = torch_logits(run.model_dir, texts, run.max_length, run.truncation_side)
    with _step("parity: ONNX fp32", job.timings):
        fp32_figures = compare_fp32(reference, onnx_logits(fp32_engine, texts))
    return _TestSplit(
        texts=texts,
        gold=gold_matrix(examples, run.labels),
        reference=reference,
        fp32_figures=fp32_figures,
        fp32_size=(job.staging / MODEL_FP32_FILE).stat().st_size,
    )


def _judge(job: _Job, staged: Bundle, name: str, candidate: _Candidate, split: _TestSplit) -> dict[str, Any]:
    """One candidate's gate figures, batch invariance, size, speed and failures, served from staging."""
    options, run = job.options, job.run
    multi_label = run.problem_type == "multi_label"
    with _step(f"parity: {name}", job.timings):
        shutil.copyfile(candidate.path, job.staging / MODEL_FILE)
        engine = OnnxEngine(staged, job.threads, options.allow_spinning)
        figures = compare_int8(
            split.reference, onnx_logits(engine, split.texts), split.gold, multi_label, run.thresholds
        )
        invariance = batch_invariance(
            engine,
            split.texts[: options.invariance_sample],
            multi_label,
            max_score_diff=options.limits.max_batch_score_diff,
        )
        size_ratio = candidate.path.stat().st_size / split.fp32_size
        judged = None if options.allow_batch_variant else invariance
        failures = gate_failures(split.fp32_figures, figures, size_ratio, options.limits, judged)
        if candidate.mode not in BATCH_INVARIANT_MODES and not options.allow_batch_variant:
            failures.append(
                f"{candidate.mode} is batch-variant by construction (one activation scale per batch tensor; "
                f"measured here: max |score diff| {invariance['max_abs_score_diff']:.1e}); "
                "serve it only with --allow-batch-variant"
            )
        speeds = _selection_speed(engine, split.texts[: options.selection_texts])
    log.info(
        "%s: agreement %.4f, |dF1| %.3f points, invariance max |dscore| %.1e (%d flips), "
        "size %.1f%% of fp32, %.0f texts/s batch 1, %.0f batch 32%s",
        name,
        figures["label_agreement"],
        figures["delta_f1_points"],
        invariance["max_abs_score_diff"],
        invariance["label_flips"],
        100 * size_ratio,
        speeds["batch1_texts_per_second"],
        speeds["batch32_texts_per_second"],
        "" if not failures else f" (fails: {'; '.join(failures)})",
    )
    return {
        **figures,
        **speeds,
        "batch_invariance": invariance,
        "size_bytes": candidate.path.stat().st_size,
        "size_ratio": size_ratio,
        "failures": failures,
        "eligible": not failures,
    }


def _apply_gate(
    job: _Job,
    staged: Bundle,
    *,
    candidates: dict[str, _Candidate],
    reports: dict[str, dict[str, Any]],
    split: _TestSplit,
    folded: bool,
) -> dict[str, Any]:
    """Serve the fastest candidate that passed (the fastest of all if none did); returns the parity report.

    Raises:
        GateFailedError: no candidate passed and ``allow_degraded`` is off.
    """
    options = job.options
    eligible = [name for name, report in reports.items() if report["eligible"]]
    chosen = max(eligible or list(reports), key=lambda name: reports[name]["rank_texts_per_second"])
    failures = list(reports[chosen]["failures"])
    parity_report: dict[str, Any] = {
        "num_examples": len(split.texts),
        "split": "test" if not options.parity_sample else f"test[:{options.parity_sample}]",
        "fp32": split.fp32_figures,
        "int8": {k: v for k, v in reports[chosen].items() if k not in ("failures", "eligible")},
        "int8_candidate": chosen,
        "int8_source_graph": candidates[chosen].source,
        "candidates": reports,
        "limits": limits_dict(options.limits),
        "allow_batch_variant": options.allow_batch_variant,
        "passed": not failures,
        "failures": failures,
        "fp32_size_bytes": split.fp32_size,
        "token_type_ids_folded": bool(folded),
        "skip_layer_norm_fusion": options.skip_layer_norm_fusion,
    }
    if failures and not options.allow_degraded:
        raise GateFailedError(failures, parity_report)
    if failures:
        log.warning("parity gate FAILED (%s); writing a degraded bundle", "; ".join(failures))
    shutil.copyfile(candidates[chosen].path, job.staging / MODEL_FILE)
    staged.manifest.quantization = _quantization(
        options, job.isa, candidates[chosen].mode, candidates[chosen].source, reports[chosen]
    )
    staged.manifest.parity = parity_report
    staged.manifest.degraded = bool(failures)
    return parity_report


def _write_speed_report(job: _Job, staged: Bundle, candidates: dict[str, _Candidate]) -> dict[str, Any]:
    """bench.json and bench.png: PyTorch eager vs ONNX fp32 vs the served int8 graph."""
    served_mode = staged.manifest.quantization.mode
    # Timed beside the served graph so the report says what batch invariance costs on this CPU.
    unserved_dynamic = next(
        (c.path for c in candidates.values() if c.mode == "dynamic_int8" and c.mode != served_mode), None
    )
    with _step("speed report (PyTorch eager vs ONNX fp32 vs ONNX int8)", job.timings):
        report = bench_mod.speed_report(
            job.run,
            staged,
            threads=job.threads,
            rounds=job.options.bench_rounds,
            num_texts=job.options.bench_texts,
            batches_per_round=job.options.bench_batches_per_round,
            allow_spinning=job.options.allow_spinning,
            dynamic_int8_model=unserved_dynamic,
        )
    _write_json(job.staging / BENCH_FILE, report)
    bench_mod.plot_bench(
        report,
        job.staging / BENCH_PNG_FILE,
        f"{staged.manifest.name} ({job.run.run_id}) on {report['machine']['cpu']}, {job.threads} threads",
    )
    return report


def _write_reports_and_manifest(
    job: _Job,
    staged: Bundle,
    parity_report: dict[str, Any],
    bench_report: dict[str, Any] | None,
    started: float,
) -> None:
    """parity.json, the model card, the manifest with every file's SHA-256; verified before the rename."""
    manifest = staged.manifest
    _write_json(job.staging / PARITY_FILE, parity_report)
    (job.staging / MODEL_CARD_FILE).write_text(
        render_model_card(manifest, job.run.data, bench_report), encoding="utf-8"
    )
    job.timings["total"] = round(time.perf_counter() - started, 3)
    parity_report["export_seconds"] = job.timings
    _write_json(job.staging / PARITY_FILE, parity_report)
    manifest.files = checksum_files(job.staging)
    manifest.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_manifest(job.staging, manifest)
    verify_files(load_bundle(job.staging))


def _write_json(path: Path, value: object) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value, order="sorted"), indent=2) + b"\n")


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
