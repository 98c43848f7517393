"""The quick profile on the real dataset: test F1 >= 0.90 on `related`, and a complete run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.data import CSV_SHA256

pytestmark = [pytest.mark.quality, pytest.mark.slow]

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
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "config.yaml",
        "metrics.json",
        "data.json",
        "eval/test.jsonl",
        "eval/validation.jsonl",
        "training_curves.png",
        "confusion_matrix.png",
    ):
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


def test_fine_tuned_model_separates_obvious_messages(quick_run_dir: Path) -> None:
    """Minimum functionality: clear disaster requests score higher than small talk."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(quick_run_dir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(quick_run_dir / "model").eval()
    disaster = [
        "We need water and food, the flood destroyed our houses",
        "People are trapped under the collapsed school after the earthquake, send help",
    ]
    chatter = ["Happy birthday! See you at the party tonight", "What a great football game yesterday"]
    with torch.inference_mode():
        batch = tokenizer(disaster + chatter, padding=True, return_tensors="pt")
        related = torch.softmax(model(**batch).logits, dim=-1)[:, 1].tolist()
    assert min(related[:2]) > max(related[2:])
    assert min(related[:2]) > 0.5
