"""Every bad input gets its documented 4xx in the one error shape, and the service answers afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.unit.service.conftest import serve

pytestmark = pytest.mark.unit

MAX_ITEMS = 4
MAX_CHARS = 200
MAX_BODY = 4096

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def strict_client(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    with serve(
        tiny_bundle_dir, max_items=MAX_ITEMS, max_text_chars=MAX_CHARS, max_body_bytes=MAX_BODY
    ) as client:
        yield client


def raw(text: str) -> bytes:
    return text.encode("utf-8")


BAD_BODIES = [
    # (case id, body bytes, status, error type)
    ("empty text", raw('{"text": ""}'), 400, "empty_text"),
    ("whitespace text", raw('{"text": " \\t\\n\\u3000 "}'), 400, "empty_text"),
    ("whitespace in list", raw('{"texts": ["ok", "   "]}'), 400, "empty_text"),
    ("missing fields", raw("{}"), 400, "validation_error"),
    ("both text and texts", raw('{"text": "a", "texts": ["b"]}'), 400, "validation_error"),
    ("empty list", raw('{"texts": []}'), 400, "validation_error"),
    ("text is a number", raw('{"text": 3}'), 400, "validation_error"),
    ("text is a list", raw('{"text": ["a"]}'), 400, "validation_error"),
    ("texts holds a number", raw('{"texts": ["a", 1]}'), 400, "validation_error"),
    ("top_k is a string", raw('{"text": "a", "top_k": "3"}'), 400, "validation_error"),
    ("top_k is zero", raw('{"text": "a", "top_k": 0}'), 400, "validation_error"),
    ("truncate is a string", raw('{"text": "a", "truncate": "false"}'), 400, "validation_error"),
    ("unknown field", raw('{"text": "a", "lang": "en"}'), 400, "validation_error"),
    ("array body", raw('["a"]'), 400, "validation_error"),
    ("null body", raw("null"), 400, "validation_error"),
    ("invalid JSON", raw('{"text": "a"'), 400, "invalid_json"),
    ("not JSON at all", raw("text=hello"), 400, "invalid_json"),
    ("invalid UTF-8", b'{"text": "caf\xe9"}', 400, "invalid_json"),
    ("lone surrogate escape", raw('{"text": "a\\ud800b"}'), 400, "invalid_json"),
    ("NUL character", raw('{"text": "a\\u0000b"}'), 400, "invalid_text"),
    ("control character", raw('{"text": "bell\\u0007"}'), 400, "invalid_text"),
    ("C1 control character", raw('{"text": "x\\u0085y"}'), 400, "invalid_text"),
    ("too many items", raw(json.dumps({"texts": ["a"] * (MAX_ITEMS + 1)})), 400, "too_many_items"),
    ("too many characters", raw(json.dumps({"text": "a" * (MAX_CHARS + 1)})), 400, "too_many_characters"),
    ("body over the limit", raw(json.dumps({"text": "a" * (MAX_BODY + 10)})), 413, "body_too_large"),
]


@pytest.mark.parametrize(
    ("body", "status", "error_type"), [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
def test_bad_input_gets_its_documented_4xx(
    strict_client: TestClient[Any], body: bytes, status: int, error_type: str
) -> None:
    response = strict_client.post("/classify", content=body, headers=JSON)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"type", "message", "detail"}
    assert payload["error"]["type"] == error_type
    assert payload["error"]["message"]
    assert response.headers["x-request-id"]
    # ... and the service is fine afterwards.
    assert strict_client.post("/classify", json={"text": "we need water"}).status_code == 200


def test_errors_name_the_offending_item(strict_client: TestClient[Any]) -> None:
    response = strict_client.post("/classify", json={"texts": ["fine", "also fine", "tab\tok", "nul\x00"]})
    error = response.json()["error"]
    assert error["type"] == "invalid_text"
    assert error["detail"]["field"] == "texts[3]"
    assert "U+0000" in error["message"]
    too_many = strict_client.post("/classify", json={"texts": ["a"] * 9}).json()["error"]
    assert too_many["detail"] == {"count": 9, "max_items": MAX_ITEMS}


def test_tab_newline_and_unusual_unicode_are_fine(strict_client: TestClient[Any]) -> None:
    texts = ["line one\nline two\ttab\r", "مساعدة فيضان", "🌊🚒 help", "e\u0301\u0301\u0301", "零"]
    for text in texts:
        response = strict_client.post("/classify", json={"text": text})
        assert response.status_code == 200, response.text


def test_unknown_route_and_wrong_method_use_the_error_shape(strict_client: TestClient[Any]) -> None:
    missing = strict_client.get("/predict")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    wrong = strict_client.get("/classify")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "method_not_allowed"


def test_error_counts_are_metrics_by_type(strict_client: TestClient[Any]) -> None:
    def count(error_type: str) -> float:
        for line in strict_client.get("/metrics").text.splitlines():
            if line.startswith(f'textclf_errors_total{{type="{error_type}"}}'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(error_type)

    before = count("empty_text")
    strict_client.post("/classify", json={"text": " "})
    assert count("empty_text") == before + 1


def test_empty_body_and_out_of_range_numbers_are_explained(strict_client: TestClient[Any]) -> None:
    empty = strict_client.post("/classify", content=b"", headers=JSON).json()["error"]
    assert empty["type"] == "validation_error"
    assert "empty" in empty["message"]
    huge = strict_client.post("/classify", content=b'{"text": "a", "top_k": 1e400}', headers=JSON)
    assert huge.status_code == 400
    assert huge.json()["error"]["type"] == "validation_error"
