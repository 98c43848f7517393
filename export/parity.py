"""The parity gate: the exported models must answer like the PyTorch checkpoint on the run's test split.

Figures (written to ``parity.json`` and the manifest):

- fp32: ``max_abs_logit_diff`` between PyTorch and the served fp32 ONNX graph (gate: <= 1e-3).
- int8: ``delta_f1_points`` = |F1(int8) - F1(PyTorch)| x 100 against the gold labels (gate: <= 0.5) and
  ``label_agreement`` = share of decisions where int8 and PyTorch agree (gate: >= 0.98). Single-label: the
  top label per text. Multi-label: every (text, label) decision at the manifest thresholds; the share of texts
  whose whole label set agrees is reported too (``set_agreement``) but not gated.
- batch invariance (``batch_invariance``): every text scored alone and inside shuffled batches of 8, 16 and 32
  mixed-length neighbours; the largest score difference (gate: <= 1e-4, float rounding) and the number of
  changed decisions (gate: 0). A candidate that fails only this can be served with ``--allow-batch-variant``.

ONNX logits come from ``core.engine.OnnxEngine`` (the served tokenizer, padding and batch caps), PyTorch
logits from the checkpoint with its own Hugging Face tokenizer: a tokenizer mismatch fails the gate as it
should.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from core.engine import OnnxEngine, sigmoid
from core.run_dir import Example


@dataclass(frozen=True)
class GateThresholds:
    """Limits of the parity gate (issue defaults)."""

    max_abs_logit_diff: float = 1e-3
    """PyTorch vs ONNX fp32: largest allowed |logit difference| over every text and label."""
    max_delta_f1_points: float = 0.5
    """PyTorch vs int8: largest allowed |F1 difference| in percentage points."""
    min_label_agreement: float = 0.98
    """PyTorch vs int8: smallest allowed share of agreeing decisions."""
    max_size_ratio: float = 0.30
    """int8 ``model.onnx`` size as a share of ``model_fp32.onnx``."""
    max_batch_score_diff: float = 1e-4
    """Largest allowed |score difference| for a text scored alone vs inside any batch (float rounding)."""


class GateFailedError(Exception):
    """The exported model does not match PyTorch closely enough; names every failed figure."""

    def __init__(self, failures: list[str], report: dict[str, Any]) -> None:
        self.failures = failures
        self.report = report
        super().__init__("parity gate failed: " + "; ".join(failures))


def torch_logits(
    model_dir: Path,
    texts: Sequence[str],
    max_length: int,
    truncation_side: str = "right",
    batch_size: int = 32,
) -> np.ndarray:
    """Logits of the PyTorch checkpoint (eager, fp32), in input order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # transformers leaves AutoTokenizer.from_pretrained unannotated (an error only under --strict).
    tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)  # type: ignore[no-untyped-call,unused-ignore]
    tokenizer.truncation_side = truncation_side
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    # Batches of similar length waste less compute on padding; results go back to input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            encoded = tokenizer(
                [texts[i] for i in indices],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits[indices] = model(**encoded).logits.float().numpy()
    return logits


def onnx_logits(
    engine: OnnxEngine,
    texts: Sequence[str],
    batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> np.ndarray:
    """Logits of a bundle's ONNX model through the served path (tokenize, group, pad), in input order.

    The batch caps default to the service's, so the gate compares the batches the service runs.
    """
    tokenized = engine.tokenize(texts, truncate=True)
    logits = np.zeros((len(texts), len(engine.labels)), dtype=np.float32)
    for batch in plan_batches([t.length for t in tokenized], batch_size, max_batch_tokens):
        logits[batch] = engine.logits([tokenized[i] for i in batch])
    return logits


INVARIANCE_BATCH_SIZES = (8, 16, 32)


def batch_invariance(
    engine: OnnxEngine,
    texts: Sequence[str],
    multi_label: bool,
    seed: int = 0,
    max_score_diff: float = GateThresholds.max_batch_score_diff,
) -> dict[str, Any]:
    """How far a text's scores move when it shares a batch: alone vs shuffled mixed-length batches.

    Batches here ignore length on purpose (the service groups by length when it can, but under load a short
    text can share a batch with a long one), so each text also meets the most padding it can meet.
    """
    tokenized = engine.tokenize(texts, truncate=True)
    alone = np.concatenate([engine.infer([item]) for item in tokenized]) if tokenized else np.zeros((0, 0))
    rng = random.Random(seed)
    worst = 0.0
    flips = 0
    for size in INVARIANCE_BATCH_SIZES:
        order = list(range(len(tokenized)))
        rng.shuffle(order)
        batched = np.zeros_like(alone)
        for first in range(0, len(order), size):
            indices = order[first : first + size]
            batched[indices] = engine.infer([tokenized[i] for i in indices])
        worst = max(worst, float(np.abs(batched - alone).max(initial=0.0)))
        if multi_label:
            limits = np.asarray(engine.manifest.thresholds or [0.5] * alone.shape[1], dtype=np.float32)
            changed = (batched >= limits) != (alone >= limits)
        else:
            changed = batched.argmax(axis=1, keepdims=True) != alone.argmax(axis=1, keepdims=True)
        flips += int(changed.any(axis=1).sum())
    return {
        "max_abs_score_diff": worst,
        "label_flips": flips,
        "comparisons": len(texts) * len(INVARIANCE_BATCH_SIZES),
        "batch_sizes": list(INVARIANCE_BATCH_SIZES),
        "invariant": flips == 0 and worst <= max_score_diff,
    }


def decisions(logits: np.ndarray, multi_label: bool, thresholds: Sequence[float] | None) -> np.ndarray:
    """Boolean ``[texts, labels]`` decisions: one-hot argmax, or sigmoid >= threshold per label."""
    if multi_label:
        limits = np.asarray(thresholds if thresholds is not None else [0.5] * logits.shape[1])
        above: np.ndarray = sigmoid(logits) >= limits
        return above
    chosen = np.zeros(logits.shape, dtype=bool)
    chosen[np.arange(len(logits)), logits.argmax(axis=1)] = True
    return chosen


def gold_matrix(examples: Sequence[Example], labels: Sequence[str]) -> np.ndarray:
    """Boolean ``[texts, labels]`` gold labels (labels unknown to the model are ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    gold = np.zeros((len(examples), len(labels)), dtype=bool)
    for row, example in enumerate(examples):
        for label in example.labels:
            if label in index:
                gold[row, index[label]] = True
    return gold


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_score(predicted: np.ndarray, gold: np.ndarray, multi_label: bool) -> float:
    """The run's headline F1 (docs/contracts.md): positive-class F1 for binary single-label (the last label),
    macro F1 over labels for multi-class, micro F1 for multi-label."""
    if multi_label:
        tp = float((predicted & gold).sum())
        return _f1(tp, float((predicted & ~gold).sum()), float((~predicted & gold).sum()))
    per_label = [
        _f1(
            float((predicted[:, j] & gold[:, j]).sum()),
            float((predicted[:, j] & ~gold[:, j]).sum()),
            float((~predicted[:, j] & gold[:, j]).sum()),
        )
        for j in range(gold.shape[1])
    ]
    return per_label[-1] if gold.shape[1] == 2 else float(np.mean(per_label))


def compare_fp32(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """PyTorch vs ONNX fp32 logit figures."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {"max_abs_logit_diff": float(diff.max(initial=0.0)), "mean_abs_logit_diff": float(diff.mean())}


def compare_int8(
    reference: np.ndarray,
    candidate: np.ndarray,
    gold: np.ndarray,
    multi_label: bool,
    thresholds: Sequence[float] | None,
) -> dict[str, float]:
    """PyTorch vs int8 figures: F1 of each against the gold labels and how often their decisions agree."""
    ref = decisions(reference, multi_label, thresholds)
    cand = decisions(candidate, multi_label, thresholds)
    f1_reference = f1_score(ref, gold, multi_label)
    f1_candidate = f1_score(cand, gold, multi_label)
    agreement = float((ref == cand).all(axis=1).mean()) if not multi_label else float((ref == cand).mean())
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    figures = {
        "f1_pytorch": f1_reference,
        "f1_int8": f1_candidate,
        "delta_f1_points": abs(f1_candidate - f1_reference) * 100.0,
        "label_agreement": agreement,
        "max_abs_logit_diff": float(diff.max(initial=0.0)),
        "accuracy_pytorch": float((ref == gold).all(axis=1).mean()),
        "accuracy_int8": float((cand == gold).all(axis=1).mean()),
    }
    if multi_label:
        figures["set_agreement"] = float((ref == cand).all(axis=1).mean())
    return figures


def gate_failures(
    fp32: dict[str, float],
    int8: dict[str, float],
    size_ratio: float,
    limits: GateThresholds,
    invariance: dict[str, Any] | None = None,
) -> list[str]:
    """Messages naming every figure over its limit (empty when the gate passes).

    ``invariance`` (from ``batch_invariance``) is judged when given; batch-variant candidates are reported
    separately by the exporter, so a caller that allows them passes ``None``.
    """
    failures: list[str] = []
    if invariance is not None and (
        invariance["label_flips"] or invariance["max_abs_score_diff"] > limits.max_batch_score_diff
    ):
        failures.append(
            f"batch invariance: max |score diff| {invariance['max_abs_score_diff']:.2e} > "
            f"{limits.max_batch_score_diff:.0e} or {invariance['label_flips']} label flips > 0"
        )
    if fp32["max_abs_logit_diff"] > limits.max_abs_logit_diff:
        failures.append(
            f"fp32 max_abs_logit_diff {fp32['max_abs_logit_diff']:.2e} > {limits.max_abs_logit_diff:.0e}"
        )
    if int8["delta_f1_points"] > limits.max_delta_f1_points:
        failures.append(
            f"int8 delta_f1_points {int8['delta_f1_points']:.2f} > {limits.max_delta_f1_points} "
            f"(F1 {int8['f1_pytorch']:.4f} PyTorch vs {int8['f1_int8']:.4f} int8)"
        )
    if int8["label_agreement"] < limits.min_label_agreement:
        failures.append(
            f"int8 label_agreement {int8['label_agreement']:.2%} < {limits.min_label_agreement:.0%}"
        )
    if size_ratio > limits.max_size_ratio:
        failures.append(f"int8 size_ratio {size_ratio:.1%} of fp32 > {limits.max_size_ratio:.0%}")
    return failures


def limits_dict(limits: GateThresholds) -> dict[str, float]:
    return asdict(limits)
