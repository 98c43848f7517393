"""``MODEL_CARD.md``: what the bundle is for, what it was trained on, how it scored, and where it fails."""

from __future__ import annotations

from typing import Any

from export.bundle import Manifest

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


def render_model_card(manifest: Manifest, data: dict[str, Any], bench: dict[str, Any] | None) -> str:
    """Markdown model card from the manifest (metrics, parity) and the run's data fingerprint."""
    metrics: dict[str, Any] = dict(manifest.training_metrics)
    parity: dict[str, Any] = dict(manifest.parity)
    test, validation = _section(metrics, "test"), _section(metrics, "validation")
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
        "PyTorch checkpoint, from the training run:",
        "",
        "| metric | validation | test |",
        "|---|---|---|",
    ]
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "micro_f1", "macro_f1"):
        if key in test or key in validation:
            lines.append(f"| {key} | {_fmt(validation.get(key))} | {_fmt(test.get(key))} |")
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
