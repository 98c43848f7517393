"""Response checks shared by the Locust scenarios and the benchmark's sanity probe (no Locust import here,
so unit tests do not pull in gevent's monkey-patching).

Each check returns ``None`` when the response is what the API promises, or a short reason that Locust records
as the failure message (bounded text: no request data in it, so the failure table stays small).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

# The service's per-request timing headers, as named in the API, and the Locust entry each becomes.
TIMING_HEADERS = {
    "X-Tokenization-Time": "tokenization",
    "X-Queue-Time": "queue",
    "X-Inference-Time": "inference",
}


def check_classify(body: Any, expected_count: int, labels: Collection[str] | None) -> str | None:
    """Check a ``POST /classify`` response body against the API's shape.

    Args:
        body: The decoded JSON body.
        expected_count: How many texts were sent (results come back one per text, in order).
        labels: The bundle's labels from ``/info``; ``None`` skips the label check (``/info`` not read yet).
    """
    if not isinstance(body, Mapping):
        return "body is not a JSON object"
    results = body.get("results")
    if not isinstance(results, list):
        return "'results' missing or not a list"
    if len(results) != expected_count:
        return f"expected {expected_count} results, got {len(results)}"
    model = body.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
        return "'model.name' missing"
    if not isinstance(body.get("request_id"), str) or not body["request_id"]:
        return "'request_id' missing"
    for index, result in enumerate(results):
        if problem := _check_result(result, labels):
            return f"results[{index}]: {problem}"
    return None


def _check_result(result: Any, labels: Collection[str] | None) -> str | None:
    if not isinstance(result, Mapping):
        return "not an object"
    label = result.get("label")
    if not isinstance(label, str):
        return "'label' missing"
    if labels is not None and label not in labels:
        return f"label {label!r} is not one of the bundle's labels"
    score = result.get("score")
    if not isinstance(score, int | float) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
        return "'score' missing or outside [0, 1]"
    if not isinstance(result.get("truncated"), bool):
        return "'truncated' missing"
    num_tokens = result.get("num_tokens")
    if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens < 1:
        return "'num_tokens' missing"
    return None


def labels_from_info(body: Any) -> list[str] | None:
    """The bundle's labels from a ``GET /info`` body (top level or under ``model``), or ``None``."""
    if not isinstance(body, Mapping):
        return None
    for holder in (body, body.get("model")):
        if isinstance(holder, Mapping):
            labels = holder.get("labels")
            if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
                return labels
    return None


def parse_timing_ms(value: str | None) -> float | None:
    """A timing header's value in milliseconds, or ``None`` when absent or unreadable.

    Accepts a bare number of milliseconds (``"3.2"``, the text-embeddings-inference convention) or a number
    with an ``ms``/``s`` suffix.
    """
    if value is None:
        return None
    text = value.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text = text[:-2]
    elif text.endswith("s"):
        text, scale = text[:-1], 1000.0
    try:
        number = float(text) * scale
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
