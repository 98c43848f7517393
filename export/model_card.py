"""``MODEL_CARD.md``: what the bundle is for, what it was trained on, how it scored, and where it fails."""

from __future__ import annotations

from typing import Any

from core.bundle import Manifest

KNOWN_LIMITS = [
    "English messages; many in the dataset are machine translations: idioms and other languages fare worse.",
    "Trained on 2010-2012 disasters (Haiti earthquake, Pakistan floods, Hurricane Sandy, ...): new events, "
    "places and slang drift away from it; compare live predictions with the label prior.",
    "Labels come from crowd annotation and are noisy; rows with the ambiguous `related` value were dropped.",
    "Dynamic int8 quantization changes a small share of decisions near the boundary (agreement above).",
]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return "–" if value is None else str(value)


def _section(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "micro_f1", "macro_f1", "roc_auc")


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Model and baseline per split, side by side (runs older than the baseline show the model only)."""
    test, validation = _section(metrics, "test"), _section(metrics, "validation")
    baseline = _section(metrics, "baseline")
    base_test, base_validation = _section(baseline, "test"), _section(baseline, "validation")
    if not baseline:
        lines = ["| metric | validation | test |", "|---|---|---|"]
        for key in METRIC_KEYS:
            if key in test or key in validation:
                lines.append(f"| {key} | {_fmt(validation.get(key))} | {_fmt(test.get(key))} |")
        return lines
    lines = [
        "| metric | validation: model | validation: baseline | test: model | test: baseline "
        "| test: model − baseline |",
        "|---|---|---|---|---|---|",
    ]
    for key in METRIC_KEYS:
        if key not in test and key not in validation:
            continue
        ours, theirs = test.get(key), base_test.get(key)
        delta = f"{ours - theirs:+.4f}" if isinstance(ours, float) and isinstance(theirs, float) else "–"
        lines.append(
            f"| {key} | {_fmt(validation.get(key))} | {_fmt(base_validation.get(key))} | {_fmt(ours)} "
            f"| {_fmt(theirs)} | {delta} |"
        )
    threshold = metrics.get("decision_threshold")
    if isinstance(threshold, float):
        lines += [
            "",
            "Binary decision threshold tuned on validation macro-F1: the model answers the positive label "
            f"when its probability before the shift is at least {threshold:.2f} (folded into the classifier "
            "bias, so the served argmax applies it); the baseline's cut is "
            f"{_fmt(baseline.get('decision_threshold'))}.",
        ]
    return lines


def _per_label_table(metrics: dict[str, Any]) -> list[str]:
    """Multi-label: test F1 per label for the model and the baseline, with support."""
    per_label = _section(_section(metrics, "test"), "per_label")
    base_per_label = _section(_section(_section(metrics, "baseline"), "test"), "per_label")
    if not per_label:
        return []
    lines = [
        "",
        "Per label on the test split (F1 at the thresholds tuned on validation):",
        "",
        "| label | support | model F1 | baseline F1 | model − baseline |",
        "|---|---|---|---|---|",
    ]
    for label, figures in per_label.items():
        ours = figures.get("f1")
        theirs = _section(base_per_label, label).get("f1")
        delta = f"{ours - theirs:+.4f}" if isinstance(ours, float) and isinstance(theirs, float) else "–"
        lines.append(f"| {label} | {figures.get('support', '–')} | {_fmt(ours)} | {_fmt(theirs)} | {delta} |")
    return lines


def render_model_card(manifest: Manifest, data: dict[str, Any], bench: dict[str, Any] | None) -> str:
    """Markdown model card from the manifest (metrics, parity) and the run's data fingerprint."""
    metrics: dict[str, Any] = dict(manifest.training_metrics)
    parity: dict[str, Any] = dict(manifest.parity)
    int8, fp32 = _section(parity, "int8"), _section(parity, "fp32")
    quant = manifest.quantization
    labels = ", ".join(f"`{label}`" for label in manifest.labels)
    lines = [
        f"# Model card: {manifest.name} ({manifest.version})",
        "",
        "## Intended use",
        "",
        "Classify short messages (SMS, social media posts, news snippets) sent during disasters: task "
        f"`{manifest.task}`, {manifest.problem_type.replace('_', '-')}, labels {labels}. Meant to help "
        "triage a message stream with people reviewing what matters, not to decide alone who gets help.",
        "",
        "## Model",
        "",
        f"- Base model: `{manifest.base_model}`, fine-tuned in run `{manifest.version}`.",
        f"- `model.onnx`: {quant.mode} for {quant.isa} (per-channel: {quant.per_channel}), quantized from "
        f"the {quant.source_graph} fp32 graph; opset {manifest.opset}.",
        f"- `model_fp32.onnx`: the fp32 graph after {quant.optimization_level}, for comparison.",
        f"- Inputs: {', '.join(manifest.inputs)}; at most {manifest.max_length} tokens "
        f"(longer texts are cut on the {manifest.truncation_side} or refused).",
    ]
    if manifest.thresholds is not None:
        pairs = zip(manifest.labels, manifest.thresholds, strict=True)
        lines.append("- Thresholds: " + ", ".join(f"{label} {t:.2f}" for label, t in pairs))
    lines += [
        "",
        "## Data",
        "",
        f"- Dataset: `{data.get('dataset', 'unknown')}` from `{data.get('source', 'unknown')}` "
        f"(SHA-256 `{str(data.get('sha256', ''))[:16]}…`).",
        f"- Split sizes: {data.get('split_sizes', {})}.",
        f"- Label prior (training split): {manifest.label_prior}.",
        f"- Dropped rows: {data.get('dropped', {})}.",
        "",
        "## Metrics",
        "",
        "PyTorch checkpoint, from the training run, beside the run's classical baseline (TF-IDF word "
        "1-2-grams + logistic regression on the same training rows, decisions tuned on the same validation "
        "split):",
        "",
    ]
    lines += _metrics_table(metrics)
    lines += _per_label_table(metrics)
    lines += [
        "",
        f"Before and after quantization, on {parity.get('num_examples', '?')} test messages "
        "(the export's parity gate):",
        "",
        "| metric | PyTorch fp32 | ONNX int8 |",
        "|---|---|---|",
        f"| F1 | {_fmt(int8.get('f1_pytorch'))} | {_fmt(int8.get('f1_int8'))} |",
        f"| accuracy | {_fmt(int8.get('accuracy_pytorch'))} | {_fmt(int8.get('accuracy_int8'))} |",
        "",
        f"Label agreement int8 vs PyTorch {_fmt(int8.get('label_agreement'))}, |ΔF1| "
        f"{_fmt(int8.get('delta_f1_points'))} points; ONNX fp32 vs PyTorch max |Δlogit| "
        f"{_fmt(fp32.get('max_abs_logit_diff'))}.",
    ]
    if manifest.degraded:
        lines += ["", "**The parity gate failed; this bundle was written with --allow-degraded.**"]
    if bench:
        machine = bench.get("machine", {})
        lines += [
            "",
            "## Speed (export machine, one process)",
            "",
            f"{machine.get('cpu', '?')}, {bench.get('threads', '?')} threads, 1-minute load average "
            f"{machine.get('load_average_1m_before', '?')} at the start (other processes slow PyTorch's "
            "thread pool most). Tokenization included.",
            "",
        ]
        lines += ["| batch | system | texts/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for size, by_system in bench.get("results", {}).items():
            for system, figures in by_system.items():
                lines.append(
                    f"| {size} | {system} | {figures['texts_per_second']:.0f} | {figures['p50_ms']:.2f} "
                    f"| {figures['p99_ms']:.2f} |"
                )
    limits = [*KNOWN_LIMITS, f"Only the first {manifest.max_length} tokens of a text are read."]
    lines += ["", "## Known limits", "", *(f"- {limit}" for limit in limits), ""]
    return "\n".join(lines)
