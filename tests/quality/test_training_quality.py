"""The quick profile on the real dataset: test F1 >= 0.90 on `related`, and a complete run directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.run_dir import RUN_DIR_FILES
from training.data import CSV_SHA256

pytestmark = pytest.mark.slow

TEST_SPLIT_SIZE = 2620  # 2,629 test rows minus the related=2 ones


def _load(run_dir: Path, name: str) -> Any:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


def test_quick_profile_reaches_the_f1_target(quick_run_dir: Path) -> None:
    metrics = _load(quick_run_dir, "metrics.json")
    test = metrics["test"]
    assert test["n"] == TEST_SPLIT_SIZE
    assert test["positive_label"] == "related"
    assert test["f1"] >= 0.90, f"test F1 {test['f1']:.4f} is below 0.90"
    assert test["accuracy"] >= 0.80
    assert test["roc_auc"] >= 0.85


def test_quick_run_directory_is_complete(quick_run_dir: Path) -> None:
    for name in RUN_DIR_FILES:
        assert (quick_run_dir / name).is_file(), name
    data = _load(quick_run_dir, "data.json")
    assert data["sha256"] == CSV_SHA256
    assert data["labels"] == ["not_related", "related"]
    assert data["split_sizes"]["train"] == 3000
    assert data["split_sizes"]["test"] == TEST_SPLIT_SIZE
    assert data["dropped"]["related=2"] == 193
    assert sum(data["label_prior"].values()) == pytest.approx(1.0)
    assert data["thresholds"] is None
    lines = (quick_run_dir / "eval" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == TEST_SPLIT_SIZE


@pytest.fixture(scope="module")
def related_score(quick_run_dir: Path) -> Callable[[list[str]], list[float]]:
    """P(related) for texts, from the fine-tuned checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(quick_run_dir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(quick_run_dir / "model").eval()
    related = model.config.label2id["related"]

    def score(texts: list[str]) -> list[float]:
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
            return torch.softmax(model(**batch).logits, dim=-1)[:, related].tolist()

    return score


def test_minimum_functionality(related_score: Callable[[list[str]], list[float]]) -> None:
    """Clear disaster requests score higher than small talk."""
    disaster = [
        "We need water and food, the flood destroyed our houses",
        "People are trapped under the collapsed school after the earthquake, send help",
    ]
    chatter = ["Happy birthday! See you at the party tonight", "What a great football game yesterday"]
    scores = related_score(disaster + chatter)
    assert min(scores[:2]) > max(scores[2:])
    assert min(scores[:2]) > 0.5


def test_invariance_to_the_place_name(related_score: Callable[[list[str]], list[float]]) -> None:
    """Swapping the place does not flip the decision."""
    template = "The bridge in {place} collapsed and families need tents and clean water"
    scores = related_score(
        [template.format(place=p) for p in ("Leogane", "Karachi", "Valparaiso", "New Jersey")]
    )
    assert all(score > 0.5 for score in scores), scores


def test_directional_disaster_words_raise_the_score(
    related_score: Callable[[list[str]], list[float]],
) -> None:
    """Adding a flood and a request for help to an ordinary message raises P(related)."""
    plain, flooded = related_score(
        ["I am at home with my family", "I am at home with my family, the flood is rising and we need help"]
    )
    assert flooded > plain


def test_quick_run_carries_the_baseline_and_beats_it(quick_run_dir: Path) -> None:
    """The baseline is fitted on the same 3,000 messages; the fine-tune ranks messages clearly better."""
    metrics = _load(quick_run_dir, "metrics.json")
    baseline = metrics["baseline"]
    for split in ("validation", "test"):
        assert set(baseline[split]) == set(metrics[split])
        assert baseline[split]["n"] == metrics[split]["n"]
    assert baseline["train_rows"] == 3000
    # Measured: ROC-AUC 0.891 against 0.845 for the baseline on the same rows (decision cuts tuned: macro-F1
    # 0.734 against 0.698). The quick profile keeps the argmax cut for both.
    assert metrics["test"]["roc_auc"] >= baseline["test"]["roc_auc"] + 0.02
    assert metrics["test"]["macro_f1"] >= baseline["test"]["macro_f1"]
    assert metrics["decision_threshold"] is None
