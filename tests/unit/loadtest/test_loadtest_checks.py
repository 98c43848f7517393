"""Response checks the Locust scenarios mark failures with, and the timing-header parser."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from loadtest.checks import check_classify, labels_from_info, parse_timing_ms

LABELS = ["not_related", "related"]
GOOD: dict[str, Any] = {
    "results": [
        {"label": "related", "score": 0.93, "truncated": False, "num_tokens": 12},
        {"label": "not_related", "score": 0.61, "truncated": True, "num_tokens": 140},
    ],
    "model": {"name": "disaster-related", "version": "20261126-1"},
    "request_id": "abc123",
}


def test_valid_response_passes() -> None:
    assert check_classify(GOOD, 2, LABELS) is None
    # Before /info has been read the label cannot be checked, the rest still is.
    assert check_classify(GOOD, 2, None) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b["results"].pop(), "expected 2 results, got 1"),
        (lambda b: b["results"][0].update(label="flood"), "results[0]: label 'flood' is not one of"),
        (lambda b: b["results"][1].update(score=1.7), "results[1]: 'score' missing or outside"),
        (lambda b: b["results"][0].pop("truncated"), "results[0]: 'truncated' missing"),
        (lambda b: b["results"][0].update(num_tokens="12"), "results[0]: 'num_tokens' missing"),
        (lambda b: b.pop("model"), "'model.name' missing"),
        (lambda b: b.update(request_id=""), "'request_id' missing"),
        (lambda b: b.update(results={"label": "related"}), "'results' missing or not a list"),
    ],
)
def test_broken_response_is_failed_with_reason(mutate: Any, reason: str) -> None:
    body = copy.deepcopy(GOOD)
    mutate(body)
    problem = check_classify(body, 2, LABELS)
    assert problem is not None
    assert reason in problem


def test_non_object_body_fails() -> None:
    assert check_classify(None, 1, LABELS) == "body is not a JSON object"
    assert check_classify([GOOD], 1, LABELS) == "body is not a JSON object"


def test_labels_from_info_top_level_or_nested() -> None:
    assert labels_from_info({"name": "m", "labels": LABELS}) == LABELS
    assert labels_from_info({"model": {"labels": LABELS}}) == LABELS
    assert labels_from_info({"labels": []}) is None
    assert labels_from_info("labels") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3.25", 3.25), ("12ms", 12.0), ("0.004s", 4.0), (" 7 ", 7.0), ("0", 0.0)],
)
def test_timing_header_values_in_milliseconds(value: str, expected: float) -> None:
    assert parse_timing_ms(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "soon", "-1", "nan", "inf"])
def test_unreadable_timing_header_is_skipped(value: str | None) -> None:
    assert parse_timing_ms(value) is None
