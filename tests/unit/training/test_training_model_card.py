"""The model card shows what training measured: model beside baseline, per-label F1 for multi-label runs."""

from __future__ import annotations

from typing import Any

from core.bundle import Manifest, Quantization
from export.model_card import render_model_card


def _manifest(problem_type: str, labels: list[str], metrics: dict[str, Any]) -> Manifest:
    return Manifest(
        schema_version=1,
        name="m",
        version="v",
        base_model="base",
        task="t",
        problem_type=problem_type,  # type: ignore[arg-type]
        labels=labels,
        thresholds=[0.3] * len(labels) if problem_type == "multi_label" else None,
        max_length=64,
        inputs=["input_ids", "attention_mask"],
        quantization=Quantization(mode="dynamic_int8"),
        opset=17,
        versions={},
        files={},
        training_metrics=metrics,
        created_at="2026-11-30T00:00:00Z",
    )


def _split(f1: float, **extra: Any) -> dict[str, Any]:
    return {"accuracy": 0.8, "f1": f1, "macro_f1": f1 - 0.1, "roc_auc": 0.9, **extra}


def test_binary_card_puts_model_and_baseline_side_by_side() -> None:
    metrics = {
        "validation": _split(0.91),
        "test": _split(0.92),
        "decision_threshold": 0.65,
        "baseline": {"validation": _split(0.90), "test": _split(0.89), "decision_threshold": 0.6},
    }
    card = render_model_card(_manifest("single_label", ["no", "yes"], metrics), {}, None)
    assert "| metric | validation: model | validation: baseline | test: model | test: baseline" in card
    assert "| f1 | 0.9100 | 0.9000 | 0.9200 | 0.8900 | +0.0300 |" in card
    assert "at least 0.65" in card
    assert "Per label" not in card


def test_multi_label_card_lists_per_label_f1_against_the_baseline() -> None:
    per_label = {"water": {"f1": 0.7, "support": 50}, "food": {"f1": 0.6, "support": 80}}
    base_per_label = {"water": {"f1": 0.75, "support": 50}, "food": {"f1": 0.5, "support": 80}}
    metrics = {
        "validation": _split(0.6),
        "test": _split(0.65, micro_f1=0.65, per_label=per_label),
        "baseline": {
            "validation": _split(0.6),
            "test": _split(0.62, micro_f1=0.62, per_label=base_per_label),
        },
    }
    card = render_model_card(_manifest("multi_label", ["water", "food"], metrics), {}, None)
    assert "| water | 50 | 0.7000 | 0.7500 | -0.0500 |" in card
    assert "| food | 80 | 0.6000 | 0.5000 | +0.1000 |" in card


def test_a_run_without_a_baseline_still_renders() -> None:
    metrics = {"validation": _split(0.9), "test": _split(0.9)}
    card = render_model_card(_manifest("single_label", ["no", "yes"], metrics), {}, None)
    assert "| f1 | 0.9000 | 0.9000 |" in card
