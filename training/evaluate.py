"""Evaluation: batched prediction, the metrics of ``metrics.json``, threshold tuning and the plots.

Single-label metrics follow ``docs/contracts.md``: for two labels, ``precision``, ``recall`` and ``f1`` are
the
positive class's (the second label, e.g. ``related``); with more labels they are macro averages. Multi-label
metrics use per-label thresholds (tuned on validation) and report ``f1`` = micro F1, ``macro_f1`` and
``per_label``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)

Features = dict[str, list[int]]
"""One tokenized text: ``input_ids``, ``attention_mask`` (and ``token_type_ids``), not padded."""
Scores = NDArray[np.float32]
"""Probabilities ``[n, labels]``."""
Targets = NDArray[np.int64] | NDArray[np.float32]
"""Encoded labels: class indices ``[n]`` (single-label) or 0/1 indicators ``[n, labels]`` (multi-label)."""
History = dict[str, list[float]]
"""``history.json``: ``step``/``loss`` per step, ``eval_step``/``val_f1``/``val_loss`` per evaluation."""


class LabelMetrics(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class SplitMetrics(TypedDict, total=False):
    """One split's figures in ``metrics.json``; which keys appear depends on the problem type."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    micro_f1: float
    macro_f1: float
    roc_auc: float | None
    loss: float
    average: str
    positive_label: str | None
    labels: list[str]
    thresholds: list[float]
    per_label: dict[str, LabelMetrics]
    confusion_matrix: list[list[int]] | dict[str, list[list[int]]]
    """Single-label: ``[true][predicted]`` counts; multi-label: ``[[TN, FP], [FN, TP]]`` per label."""


def collate(features: list[Features], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (dynamic padding) and return int64 tensors."""
    import torch

    longest = max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in features[0]:
        pad = pad_token_id if key == "input_ids" else 0
        rows = [f[key] + [pad] * (longest - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


def predict_scores(
    model: PreTrainedModel,
    *,
    features: list[Features],
    problem_type: str,
    batch_size: int,
    device: torch.device,
    pad_token_id: int,
) -> Scores:
    """Probabilities ``[n, labels]``: softmax (single-label) or sigmoid (multi-label).

    Texts are batched in length order so each batch pads little, then put back in input order.
    """
    import torch

    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    scores = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk], pad_token_id).items()}
            logits = model(**batch).logits.float()
            probs = torch.sigmoid(logits) if problem_type == "multi_label" else torch.softmax(logits, dim=-1)
            scores[chunk] = probs.cpu().numpy()
    model.train(was_training)
    return scores


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def single_label_metrics(y_true: Targets, scores: Scores, labels: list[str]) -> SplitMetrics:
    """Accuracy, precision/recall/F1 (positive class when binary, else macro), ROC-AUC, confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_pred = scores.argmax(axis=1)
    binary = len(labels) == 2
    average = "binary" if binary else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, pos_label=1, labels=list(range(len(labels))), zero_division=0
    )
    macro_f1 = precision_recall_fscore_support(
        y_true, y_pred, average="macro", labels=list(range(len(labels))), zero_division=0
    )[2]
    try:
        if binary:
            roc_auc = roc_auc_score(y_true, scores[:, 1])
        else:
            roc_auc = roc_auc_score(y_true, scores, multi_class="ovr", labels=list(range(len(labels))))
    except ValueError:  # only one class present
        roc_auc = float("nan")
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(scores[np.arange(len(y_true)), y_true], eps, 1.0))))
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(macro_f1),
        "roc_auc": _none_if_nan(roc_auc),
        "loss": loss,
        "average": "positive_class" if binary else "macro",
        "positive_label": labels[1] if binary else None,
        "labels": labels,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).tolist(),
    }


def multi_label_metrics(
    y_true: Targets, scores: Scores, labels: list[str], thresholds: list[float]
) -> SplitMetrics:
    """Subset accuracy, micro precision/recall/F1 (``f1``), macro F1, per-label figures, ROC-AUC, matrices."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    y_true = y_true.astype(int)
    y_pred = (scores >= np.asarray(thresholds)[None, :]).astype(int)
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    per_p, per_r, per_f, per_s = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    aucs = []
    for j in range(len(labels)):
        if 0 < y_true[:, j].sum() < len(y_true):
            aucs.append(roc_auc_score(y_true[:, j], scores[:, j]))
    matrices = {}
    for j, label in enumerate(labels):
        t, p = y_true[:, j], y_pred[:, j]
        tn, fp = int(((t == 0) & (p == 0)).sum()), int(((t == 0) & (p == 1)).sum())
        fn, tp = int(((t == 1) & (p == 0)).sum()), int(((t == 1) & (p == 1)).sum())
        matrices[label] = [[tn, fp], [fn, tp]]
    eps = 1e-7
    clipped = np.clip(scores, eps, 1 - eps)
    loss = float(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped)))
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(micro[0]),
        "recall": float(micro[1]),
        "f1": float(micro[2]),
        "micro_f1": float(micro[2]),
        "macro_f1": float(macro[2]),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "loss": loss,
        "labels": labels,
        "thresholds": [float(t) for t in thresholds],
        "per_label": {
            label: {
                "precision": float(per_p[j]),
                "recall": float(per_r[j]),
                "f1": float(per_f[j]),
                "support": int(per_s[j]),
            }
            for j, label in enumerate(labels)
        },
        "confusion_matrix": matrices,
    }


def tune_thresholds(y_true: Targets, scores: Scores) -> list[float]:
    """Per-label threshold maximising that label's F1 on validation (0.5 for a label without positives)."""
    thresholds = []
    for j in range(y_true.shape[1]):
        truth = y_true[:, j].astype(bool)
        if not truth.any():
            thresholds.append(0.5)
            continue
        best, best_f1 = 0.5, -1.0
        for threshold in THRESHOLD_GRID:
            predicted = scores[:, j] >= threshold
            tp = float((predicted & truth).sum())
            f1 = 2 * tp / (predicted.sum() + truth.sum()) if (predicted.sum() + truth.sum()) else 0.0
            # Ties go to the threshold closer to 0.5, the least surprising choice.
            if f1 > best_f1 + 1e-12 or (
                abs(f1 - best_f1) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)
            ):
                best, best_f1 = float(threshold), f1
        thresholds.append(best)
    return thresholds


def _binary_macro_f1(truth: NDArray[np.bool_], predicted: NDArray[np.bool_]) -> float:
    """Mean of the positive and the negative class's F1 (boolean arrays)."""

    def f1(actual: NDArray[np.bool_], chosen: NDArray[np.bool_]) -> float:
        denominator = float(actual.sum() + chosen.sum())
        return 2 * float((actual & chosen).sum()) / denominator if denominator else 0.0

    return (f1(truth, predicted) + f1(~truth, ~predicted)) / 2


def tune_decision_threshold(y_true: Targets, scores: Scores) -> float:
    """Binary tasks: the threshold on P(second label) maximising validation macro-F1.

    Macro-F1 weighs the minority class (``not_related``: about a quarter of the messages) as much as the
    majority, so the argmax's implicit 0.5 is rarely the best cut on this data. Ties go to the threshold
    closest to 0.5.
    """
    truth = np.asarray(y_true).astype(int) == 1
    positive_scores = scores[:, 1]
    best, best_f1 = 0.5, -1.0
    for threshold in THRESHOLD_GRID:
        f1 = _binary_macro_f1(truth, positive_scores >= threshold)
        if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)):
            best, best_f1 = float(threshold), f1
    return best


def shift_binary_scores(scores: Scores, threshold: float) -> Scores:
    """Binary probabilities re-centred so that argmax decides ``P(second label) >= threshold``.

    The same shift the model gets in its classifier bias (``training.model.fold_decision_threshold``):
    ``logit(p') = logit(p) - logit(threshold)``. Rankings (ROC-AUC) do not change; decisions and the
    log-loss do.
    """
    eps = 1e-7
    positive = np.clip(scores[:, 1].astype(np.float64), eps, 1 - eps)
    shifted_logit = np.log(positive / (1 - positive)) - math.log(threshold / (1 - threshold))
    shifted = 1.0 / (1.0 + np.exp(-shifted_logit))
    return np.stack([1.0 - shifted, shifted], axis=1).astype(np.float32)


def compute_metrics(
    problem_type: str,
    labels: list[str],
    y_true: Targets,
    scores: Scores,
    thresholds: list[float] | None = None,
) -> SplitMetrics:
    if problem_type == "multi_label":
        return multi_label_metrics(y_true, scores, labels, thresholds or [0.5] * len(labels))
    return single_label_metrics(y_true, scores, labels)


# ----------------------------------------------------------------------------------------------------
# Plots


def plot_training_curves(history: History, path: Path) -> None:
    """Training loss per step (raw and smoothed) and validation loss/F1 at each evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps, losses = history.get("step", []), history.get("loss", [])
    if steps:
        left.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="batch loss")
        window = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(steps[window - 1 :], smooth, color="#08519c", label=f"mean of {window}")
    left.set(title="training loss", xlabel="step", ylabel="loss")
    left.legend(loc="upper right")
    eval_steps = history.get("eval_step", [])
    if eval_steps:
        right.plot(eval_steps, history["val_f1"], marker="o", color="#2ca02c", label="validation F1")
        right.set_ylim(0, 1)
        twin = right.twinx()
        twin.plot(eval_steps, history["val_loss"], marker="s", color="#d62728", label="validation loss")
        twin.set_ylabel("loss")
        twin.legend(loc="lower left")
    right.set(title="validation", xlabel="step", ylabel="F1")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(metrics: SplitMetrics, path: Path, title: str = "test") -> None:
    """Single-label: the confusion matrix with counts. Multi-label: per-label TN/FP/FN/TP, row-normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = metrics["confusion_matrix"]
    if isinstance(matrix, dict):
        labels = list(matrix)
        counts = np.array([[m[0][0], m[0][1], m[1][0], m[1][1]] for m in matrix.values()], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        fig, axis = plt.subplots(figsize=(6, max(3, 0.28 * len(labels) + 1)))
        axis.imshow(shares, cmap="Blues", aspect="auto", vmin=0, vmax=1)
        axis.set_xticks(range(4), ["TN", "FP", "FN", "TP"])
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        for i in range(len(labels)):
            for j in range(4):
                axis.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6)
        axis.set_title(f"{title}: per-label outcomes (micro F1 {metrics['f1']:.3f})")
    else:
        labels = metrics["labels"]
        counts = np.array(matrix, dtype=float)
        fig, axis = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.2 * len(labels) + 2))
        axis.imshow(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        axis.set(xlabel="predicted", ylabel="true")
        for i in range(len(labels)):
            for j in range(len(labels)):
                axis.text(j, i, str(int(counts[i, j])), ha="center", va="center")
        axis.set_title(f"{title}: accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
