"""The classical baseline every training run fits beside the fine-tune, on the same rows.

TF-IDF over word 1-2-grams (``min_df=2``, sublinear tf) feeding a logistic regression: multinomial for
single-label tasks, one-vs-rest (one binary regression per label) for multi-label tasks. It takes seconds on
the whole training split and answers the question a user asks first: what does fine-tuning buy over ten lines
of scikit-learn? Its decisions are tuned on validation exactly like the model's (per-label thresholds for
multi-label, the binary decision threshold when ``train.tune_decision_threshold`` is on), and its metrics have
the same keys as the model's (``metrics.json``: ``baseline.validation``, ``baseline.test``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, cast

import numpy as np

from training.evaluate import (
    Scores,
    SplitMetrics,
    Targets,
    compute_metrics,
    shift_binary_scores,
    tune_decision_threshold,
    tune_thresholds,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

log = logging.getLogger("training.baseline")

DESCRIPTION = (
    "TF-IDF word 1-2-grams (min_df 2, sublinear tf) + logistic regression "
    "(one-vs-rest for multi-label), fitted on the same training rows"
)


class BaselineMetrics(TypedDict, total=False):
    """``metrics.json``'s ``baseline``: metrics per evaluated split (keys as the model's) and the fit."""

    validation: SplitMetrics
    test: SplitMetrics
    description: str
    fit_seconds: float
    seconds: float
    train_rows: int
    vocabulary_size: int
    decision_threshold: float | None


@dataclass
class BaselineResult:
    """What the baseline produced: metrics per split plus the scores behind them."""

    metrics: BaselineMetrics
    scores: dict[str, Scores]
    """Probabilities ``[n, labels]`` per evaluated split, after any decision-threshold shift."""


def build_pipeline(problem_type: str, n_labels: int, seed: int) -> Pipeline:
    """The unfitted scikit-learn pipeline (vectorizer + classifier)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    # liblinear solves one small binary problem per label in about a second on sparse TF-IDF rows (lbfgs
    # took minutes for 33 labels on a busy 2-core machine); lbfgs stays for softmax over 3+ labels.
    solver = "lbfgs" if problem_type == "single_label" and n_labels > 2 else "liblinear"
    regression = LogisticRegression(solver=solver, max_iter=1000, random_state=seed)
    classifier = OneVsRestClassifier(regression) if problem_type == "multi_label" else regression
    return make_pipeline(vectorizer, classifier)


def _scores(pipeline: Pipeline, texts: list[str], problem_type: str, n_labels: int) -> Scores:
    """Probabilities in label order ``[n, n_labels]``, also when a class was absent from training."""
    raw = np.asarray(pipeline.predict_proba(texts), dtype=np.float32)
    if problem_type == "multi_label":
        return raw
    scores = np.zeros((len(texts), n_labels), dtype=np.float32)
    scores[:, pipeline.classes_.astype(int)] = raw
    return scores


def fit_baseline(
    *,
    problem_type: str,
    labels: list[str],
    texts: dict[str, list[str]],
    targets: dict[str, Targets],
    seed: int,
    tune_decision: bool,
) -> BaselineResult:
    """Fit on ``texts["train"]``, tune decisions on ``validation``, score every other split given.

    Args:
        problem_type: ``single_label`` or ``multi_label``.
        labels: Label names in output order (the model's order).
        texts: Input texts per split; must hold ``train`` and ``validation``.
        targets: Encoded targets per split, as ``training.train.encode_labels`` builds them.
        seed: Seed for the solver (liblinear/lbfgs are deterministic; kept for completeness).
        tune_decision: For binary tasks, move the decision threshold to the one maximising validation
            macro-F1 (as the model does when ``train.tune_decision_threshold`` is on).

    Returns:
        The metrics per split (same keys as the model's) and the scores behind them.
    """
    start = time.perf_counter()
    train_targets = targets["train"]
    multi = problem_type == "multi_label"
    pipeline = build_pipeline(problem_type, len(labels), seed)
    with warnings.catch_warnings():
        # One-vs-rest warns for a label without positives in a small training subset; it then predicts
        # that label never, which the metrics show.
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        pipeline.fit(texts["train"], train_targets.astype(int) if multi else train_targets)
    fit_seconds = time.perf_counter() - start

    scores = {
        split: _scores(pipeline, split_texts, problem_type, len(labels))
        for split, split_texts in texts.items()
        if split != "train"
    }
    thresholds: list[float] | None = None
    decision_threshold: float | None = None
    if multi:
        thresholds = tune_thresholds(targets["validation"], scores["validation"])
    elif tune_decision and len(labels) == 2:
        decision_threshold = tune_decision_threshold(targets["validation"], scores["validation"])
        scores = {split: shift_binary_scores(values, decision_threshold) for split, values in scores.items()}

    per_split = {
        split: compute_metrics(problem_type, labels, targets[split], values, thresholds)
        for split, values in scores.items()
    }
    fit: dict[str, object] = {
        "description": DESCRIPTION,
        "fit_seconds": fit_seconds,
        "seconds": time.perf_counter() - start,
        "train_rows": len(texts["train"]),
        "vocabulary_size": len(pipeline[0].vocabulary_),
        "decision_threshold": decision_threshold,
    }
    metrics = cast(BaselineMetrics, {**per_split, **fit})  # the split names are the caller's
    log.info(
        "baseline (%s): fitted on %d rows in %.1f s, %d n-grams",
        "one-vs-rest" if multi else "logistic regression",
        len(texts["train"]),
        fit_seconds,
        metrics["vocabulary_size"],
    )
    return BaselineResult(metrics=metrics, scores=scores)


COMPARED_KEYS = ("f1", "macro_f1", "accuracy", "roc_auc", "precision", "recall")


def comparison_lines(
    model: Mapping[str, object], baseline: Mapping[str, object], split: str = "test"
) -> list[str]:
    """``key: model M vs baseline B (delta)`` lines for the training log."""
    ours_split, theirs_split = model.get(split, {}), baseline.get(split, {})
    if not isinstance(ours_split, Mapping) or not isinstance(theirs_split, Mapping):
        return []
    lines = []
    for key in COMPARED_KEYS:
        ours, theirs = ours_split.get(key), theirs_split.get(key)
        if isinstance(ours, int | float) and isinstance(theirs, int | float):
            lines.append(f"{split} {key}: model {ours:.4f} vs baseline {theirs:.4f} ({ours - theirs:+.4f})")
    return lines
