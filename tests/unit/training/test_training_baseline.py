"""The classical baseline, the binary decision threshold, the prior-initialised multi-label head and the time
budget: each on synthetic data or the tiny BERT, in seconds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import REPO_ROOT
from training.baseline import comparison_lines, fit_baseline
from training.config import Config, load_config
from training.evaluate import shift_binary_scores, tune_decision_threshold
from training.train import encode_labels, run

CONFIGS = REPO_ROOT / "training" / "configs"

NEEDS = {
    "water": ["we need clean water", "no drinking water here", "water is finished", "thirsty no water"],
    "food": ["we need food", "no rice and no bread", "hungry children need food", "food ran out"],
    "shelter": ["our house fell, need tents", "we sleep outside, need shelter", "tents please", "no roof"],
}
CHATTER = ["good morning friends", "the match was great", "see you tomorrow", "happy birthday to you"]


def _multi_label_rows(repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index in range(repeat):
        for label, texts in NEEDS.items():
            rows.append({"text": f"{texts[index % 4]} {index}", "labels": [label]})
        rows.append({"text": f"{NEEDS['water'][index % 4]} and {NEEDS['food'][index % 4]}", "labels": []})
        rows[-1]["labels"] = ["water", "food"]
        rows.append({"text": f"{CHATTER[index % 4]} {index}", "labels": []})
    return rows


def _split(rows: list[dict[str, Any]], labels: list[str], problem_type: str) -> dict[str, Any]:
    parts = {"train": rows[: len(rows) // 2], "validation": rows[len(rows) // 2 :], "test": rows[::3]}
    return {
        "texts": {name: [row["text"] for row in part] for name, part in parts.items()},
        "targets": {name: encode_labels(part, labels, problem_type) for name, part in parts.items()},
    }


def test_multi_label_baseline_keeps_the_label_order() -> None:
    """Each output column is the label of the same index: a shuffled order would score near zero."""
    labels = ["shelter", "water", "food"]  # not alphabetical, not the order the rows mention them
    data = _split(_multi_label_rows(24), labels, "multi_label")
    result = fit_baseline(problem_type="multi_label", labels=labels, seed=13, tune_decision=True, **data)
    test = result.metrics["test"]
    for label in labels:
        assert test["per_label"][label]["f1"] >= 0.9, (label, test["per_label"][label])
    assert len(test["thresholds"]) == 3
    assert test["thresholds"] == result.metrics["validation"]["thresholds"]  # tuned on validation, reused
    assert result.scores["test"].shape == (len(data["texts"]["test"]), 3)


def test_baseline_metrics_have_the_model_metrics_keys() -> None:
    from training.evaluate import compute_metrics

    labels = ["not_related", "related"]
    rows = [
        {"text": f"{text} {i}", "label": "related" if label in NEEDS else "not_related"}
        for i in range(20)
        for label, text in [*(("water", t) for t in NEEDS["water"]), *(("-", t) for t in CHATTER)]
    ]
    data = _split(rows, labels, "single_label")
    result = fit_baseline(problem_type="single_label", labels=labels, seed=13, tune_decision=True, **data)
    model_like = compute_metrics("single_label", labels, data["targets"]["test"], result.scores["test"])
    assert set(result.metrics["test"]) == set(model_like)
    assert result.metrics["test"]["f1"] == pytest.approx(1.0)
    assert 0.05 <= result.metrics["decision_threshold"] <= 0.95
    lines = comparison_lines({"test": model_like}, result.metrics)
    assert lines[0].startswith("test f1: model 1.0000 vs baseline 1.0000 (+0.0000)")


def test_decision_threshold_maximises_validation_macro_f1() -> None:
    # Negatives score 0.55-0.65, positives 0.72-0.9: the 0.5 argmax calls every message positive.
    truth = np.array([0] * 10 + [1] * 30)
    positive = np.concatenate([np.linspace(0.55, 0.65, 10), np.linspace(0.72, 0.9, 30)])
    scores = np.stack([1 - positive, positive], axis=1)
    threshold = tune_decision_threshold(truth, scores)
    assert 0.65 < threshold <= 0.7
    shifted = shift_binary_scores(scores, threshold)
    assert (shifted.argmax(axis=1) == truth).all()
    assert np.allclose(shifted.sum(axis=1), 1.0, atol=1e-6)
    # Rankings (and so ROC-AUC) do not move.
    assert (np.argsort(shifted[:, 1], kind="stable") == np.argsort(positive, kind="stable")).all()


def test_folding_the_threshold_into_the_head_matches_the_shifted_scores(tiny_bert_dir: Path) -> None:
    import torch

    from training.model import fold_decision_threshold, load_model, load_tokenizer

    model = load_model(str(tiny_bert_dir), ["not_related", "related"], "single_label").eval()
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    batch = tokenizer(["flood water rising", "nice weather"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        before = torch.softmax(model(**batch).logits, dim=-1).numpy()
        fold_decision_threshold(model, 0.7)
        after = torch.softmax(model(**batch).logits, dim=-1).numpy()
    assert after == pytest.approx(shift_binary_scores(before, 0.7), abs=1e-5)


def test_multi_label_head_starts_at_the_label_prior(tiny_bert_multilabel_dir: Path) -> None:
    from training.model import classifier_head, init_head_bias_to_prior, load_model

    labels = ["request", "water", "food", "shelter"]
    model = load_model(str(tiny_bert_multilabel_dir), labels, "multi_label")
    prior = np.array([0.4, 0.05, 0.1, 0.0])
    init_head_bias_to_prior(model, prior)
    bias = classifier_head(model).bias.detach().numpy()
    expected = [math.log(p / (1 - p)) for p in (0.4, 0.05, 0.1, 1e-4)]  # a label without positives: 1e-4
    assert bias == pytest.approx(expected, rel=1e-5)


def test_every_run_carries_the_baseline_and_logs_both(related_config: Path, tmp_path: Path) -> None:
    overrides = ["train.max_steps=2", "train.tune_decision_threshold=true"]
    run_dir = run(load_config(related_config, overrides), tmp_path / "run")
    assert run_dir is not None
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    baseline = metrics["baseline"]
    for split in ("validation", "test"):
        assert set(baseline[split]) == set(metrics[split])
        assert baseline[split]["n"] == metrics[split]["n"]
    assert baseline["train_rows"] == 48
    assert "TF-IDF" in baseline["description"]
    assert metrics["decision_threshold"] is not None  # binary, asked for: tuned on validation
    data = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    assert data["decision_threshold"] == metrics["decision_threshold"]
    log_text = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "baseline test: F1" in log_text
    assert "test f1: model " in log_text
    assert " vs baseline " in log_text


def test_kaggle_format_csv_gets_the_baseline_too(tiny_kaggle_config: Callable[..., Config]) -> None:
    """A user-supplied CSV in the Kaggle tweets format (id,keyword,location,text,target), generated split."""
    config = tiny_kaggle_config("train.max_steps=2")
    run_dir = run(config)
    assert run_dir is not None
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["baseline"]["test"]["labels"] == ["not_disaster", "disaster"]
    assert metrics["baseline"]["test"]["n"] == metrics["test"]["n"] == 8
    assert metrics["baseline"]["train_rows"] == 64


def test_time_budget_stops_training_and_anneals_the_rate(related_config: Path, tmp_path: Path) -> None:
    # A budget of a few milliseconds is used up after the first step: the run still finishes and reports.
    config = load_config(related_config, ["train.epochs=5", "train.time_budget_minutes=0.00001"])
    run_dir = run(config, tmp_path / "run")
    assert run_dir is not None
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["steps"] == 1
    assert "time budget of 0 min used up at step 1" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_test_subset_evaluates_a_sample(related_config: Path, tmp_path: Path) -> None:
    overrides = ["train.max_steps=1", "data.test_subset=10", "train.group_by_length=true"]
    run_dir = run(load_config(related_config, overrides), tmp_path / "run")
    assert run_dir is not None
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test"]["n"] == metrics["baseline"]["test"]["n"] == 10


def test_length_grouped_batches_cover_every_row_once_with_little_padding() -> None:
    from training.train import LengthGroupedBatches

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 64, size=1000).tolist()
    batches = LengthGroupedBatches(lengths, batch_size=32, seed=13, window=10)
    first, second = list(batches), list(batches)
    assert len(first) == len(batches) == 32
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert first != second  # a new order every epoch
    assert list(LengthGroupedBatches(lengths, 32, 13, 10)) == first  # and the same one for the same seed

    def padded(groups: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in group) * len(group) for group in groups)

    random_batches = [list(range(k, min(k + 32, 1000))) for k in range(0, 1000, 32)]
    assert padded(first) < 0.7 * padded(random_batches)
