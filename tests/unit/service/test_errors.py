"""Every bad input gets its documented 4xx in the one error shape, and the service answers afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support.app import serve

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
    response = strict_client.post("/classify", json={"texts": ["fine", "nul\x00 ok", "tab\tok", " \u3000"]})
    error = response.json()["error"]
    assert error["type"] == "empty_text"
    assert error["detail"] == {"field": "texts[3]"}
    assert "texts[3]" in error["message"]
    long = strict_client.post("/classify", json={"texts": ["ok", "a" * (MAX_CHARS + 1)]}).json()["error"]
    assert long["detail"]["field"] == "texts[1]"
    too_many = strict_client.post("/classify", json={"texts": ["a"] * 9}).json()["error"]
    assert too_many["detail"] == {"count": 9, "max_items": MAX_ITEMS}


# Real-world junk that used to be refused (issue 13): each is classified now.
CLASSIFIED_TEXTS = {
    "NUL": "a\x00b",
    "bell": "bell\x07",
    "escape sequence": "\x1b[31mred alert\x1b[0m",
    "C1 mojibake U+0089": "Typhoon Soudelor\x89\u00db\u00d2 kills 28",
    "C1 mojibake U+009D": "flood\x9d water rising",
    "NEL U+0085": "x\x85y",
    "DEL": "help\x7f",
    "zero-width space": "we\u200bneed\u200b water",
    "zero-width joiner": "family \U0001f468\u200d\U0001f469\u200d\U0001f467 safe",
    "bidi marks": "\u202emessage\u202c \u200fwater\u200e",
    "byte-order mark": "\ufeffneed tents",
    "only control characters": "\x00\x01\x02",
    "only zero-width": "\u200b\u200c\u200d",
    "private use": "\ue000 help",
    "replacement character": "\ufffd rain",
    "line and paragraph separators": "a\u2028b\u2029c",
}


@pytest.mark.parametrize("text", list(CLASSIFIED_TEXTS.values()), ids=list(CLASSIFIED_TEXTS))
def test_control_zero_width_and_bidi_characters_are_classified(
    strict_client: TestClient[Any], text: str
) -> None:
    response = strict_client.post("/classify", json={"text": text})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["num_tokens"] >= 2
    # In a list, the same text gets the same answer and does not sink its neighbours.
    batch = strict_client.post("/classify", json={"texts": ["we need water", text]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][1]["label"] == result["label"]
    assert batch.json()["results"][1]["score"] == pytest.approx(result["score"], abs=1e-4)


def test_lone_surrogate_escapes_become_the_replacement_character(strict_client: TestClient[Any]) -> None:
    lone = strict_client.post("/classify", content=raw('{"text": "flood \\ud800 water"}'), headers=JSON)
    replaced = strict_client.post("/classify", content=raw('{"text": "flood \\ufffd water"}'), headers=JSON)
    assert lone.status_code == 200, lone.text
    assert lone.json()["results"] == replaced.json()["results"]


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


def test_413_states_the_limit(strict_client: TestClient[Any]) -> None:
    response = strict_client.post(
        "/classify", content=raw(json.dumps({"text": "a" * (MAX_BODY + 10)})), headers=JSON
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert f"{MAX_BODY} bytes" in error["message"]
    assert error["detail"] == {"max_body_bytes": MAX_BODY}


def test_unknown_field_names_the_fields_to_send(strict_client: TestClient[Any]) -> None:
    error = strict_client.post("/classify", json={"txt": "hello"}).json()["error"]
    assert error["type"] == "validation_error"
    assert "`txt`" in error["message"]
    assert "`text`" in error["message"]
    assert "`texts`" in error["message"]


def test_form_body_gets_a_hint_to_send_json(strict_client: TestClient[Any]) -> None:
    """curl -d 'text=hello' (no -H) sends a form; the answer says how to send JSON instead."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    error = strict_client.post("/classify", content=b"text=hello", headers=form).json()["error"]
    assert error["type"] == "invalid_json"
    assert "form" in error["message"]
    assert "content-type: application/json" in error["message"]
    # curl -d '{"text": ...}' without -H is a form by its header but JSON by its body: it is served.
    ok = strict_client.post("/classify", content=raw('{"text": "we need water"}'), headers=form)
    assert ok.status_code == 200, ok.text
    # A JSON content type with a broken body gets no advice about the content type.
    broken = strict_client.post("/classify", content=raw('{"text": "a"'), headers=JSON).json()["error"]
    assert "content-type" not in broken["message"]
