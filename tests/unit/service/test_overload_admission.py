"""Admission under overload, at the HTTP layer: a full queue or too many requests in flight are refused with
the JSON 429 before the request body is read (and still counted); the deadline counts from the request's
arrival, not from its admission; the body is decoded once; a lone surrogate escape becomes U+FFFD.

The raw-ASGI requests below run on the test client's own event loop (``blocking_portal``), so they meet the
same batcher as the client's requests, and their ``receive`` records whether the app ever read the body.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support.app import http_scope, rejection_count, serve
from tests.support.fakes import GatedEngine, gated_factory

BODY = b'{"text": "we need water"}'


class RawResponse:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.body_reads = 0

    def json(self) -> Any:
        return json.loads(self.body)


def raw_post(
    client: TestClient[Any], body: bytes = BODY, before_body: Callable[[], Any] | None = None
) -> RawResponse:
    """POST /classify straight into the ASGI app; ``before_body`` (a coroutine function) runs before the
    body is handed over, i.e. it is time the client spends sending it."""
    response = RawResponse()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = http_scope("/classify", headers)

    async def receive() -> dict[str, Any]:
        response.body_reads += 1
        if response.body_reads > 1:
            await asyncio.sleep(3600)  # the client stays connected
        if before_body is not None:
            await before_body()
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")

    async def call() -> None:
        await asyncio.wait_for(client.app(scope, receive, send), timeout=20)  # type: ignore[arg-type]

    client.blocking_portal.call(call)
    return response


def metric(client: TestClient[Any], prefix: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def hold(client: TestClient[Any], engines: list[GatedEngine], count: int) -> list[threading.Thread]:
    """Start ``count`` requests that the held engine keeps admitted; return when all are in the batcher."""
    threads = [
        threading.Thread(target=client.post, args=("/classify",), kwargs={"json": {"text": f"held {i}"}})
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    infer = client.app.state["infer"]
    deadline = time.monotonic() + 20
    while infer.pending < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert infer.pending == count
    assert engines[-1].entered.wait(20)
    return threads


def refused_while_held(
    client: TestClient[Any], gate: threading.Event, engines: list[GatedEngine], held: int
) -> RawResponse:
    """One raw POST sent while ``held`` requests keep the gated engine busy; then the held ones finish."""
    gate.clear()
    threads = hold(client, engines, held)
    refused = raw_post(client)
    gate.set()
    for thread in threads:
        thread.join(timeout=30)
    return refused


def test_full_queue_is_refused_before_the_body_is_read_and_counted(tiny_bundle_dir: Path) -> None:
    gate = threading.Event()
    gate.set()
    engines: list[GatedEngine] = []
    with serve(tiny_bundle_dir, engine_factory=gated_factory(gate, engines), queue_size=2) as client:
        requests_429 = 'textclf_requests_total{method="POST",route="/classify",status="429"}'
        before = metric(client, requests_429)
        refused = refused_while_held(client, gate, engines, 2)
        assert refused.status == 429
        assert refused.body_reads == 0
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["x-request-id"]
        assert refused.json()["error"] == {
            "type": "queue_full",
            "message": "too many requests queued; retry after a moment",
            "detail": {"queue_size": 2},
        }
        assert rejection_count(client, "queue_full") == 1
        assert metric(client, requests_429) == before + 1
        assert client.post("/classify", json={"text": "after"}).status_code == 200


def test_in_flight_cap_answers_json_429_before_the_body_is_read(tiny_bundle_dir: Path) -> None:
    gate = threading.Event()
    gate.set()
    engines: list[GatedEngine] = []
    with serve(
        tiny_bundle_dir, engine_factory=gated_factory(gate, engines), queue_size=8, max_in_flight=2
    ) as client:
        assert client.get("/info").json()["limits"]["max_in_flight"] == 2
        refused = refused_while_held(client, gate, engines, 2)
        assert refused.status == 429
        assert refused.body_reads == 0
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "overloaded"
        assert refused.json()["error"]["detail"] == {"max_in_flight": 2}
        assert rejection_count(client, "in_flight") == 1
        # Other routes are not capped, and the cap is released when requests finish.
        assert client.get("/health/ready").status_code == 200
        assert client.post("/classify", json={"text": "after"}).status_code == 200


def test_default_in_flight_cap_is_twice_the_queue(tiny_bundle_dir: Path) -> None:
    with serve(tiny_bundle_dir, queue_size=5) as client:
        assert client.get("/info").json()["limits"]["max_in_flight"] == 10


def test_deadline_counts_from_arrival_not_admission(tiny_bundle_dir: Path) -> None:
    """A request whose body took longer than the deadline to arrive is past its deadline: 503 at once,
    not admitted (before the fix the clock started at admission and it got 200)."""
    with serve(tiny_bundle_dir, request_deadline_seconds=1.0) as client:

        async def slow_upload() -> None:
            await asyncio.sleep(1.5)

        late = raw_post(client, before_body=slow_upload)
        assert late.status == 503, late.body
        assert late.json()["error"]["type"] == "deadline_exceeded"
        assert rejection_count(client, "deadline") == 1
        assert raw_post(client).status == 200


def test_body_is_decoded_once_strictly(tiny_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Litestar's own (lenient) JSON decode of the body no longer runs before the strict one."""
    import litestar.connection.request as request_module

    calls: list[int] = []
    original = request_module.decode_json

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(request_module, "decode_json", counting)
    with serve(tiny_bundle_dir) as client:
        assert client.post("/classify", json={"text": "we need water", "top_k": 1}).status_code == 200
        wrong = client.post("/classify", json={"text": "a", "top_k": "1"})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["type"] == "validation_error"
    assert calls == []


@pytest.mark.parametrize(
    ("body", "replaced"),
    [
        (b'{"text": "a\\ud800b"}', b'{"text": "a\\ufffdb"}'),
        (b'{"text": "end\\udbff"}', b'{"text": "end\\ufffd"}'),
        (b'{"texts": ["ok \\ud83d\\ude00", "x\\udc00"]}', b'{"texts": ["ok \\ud83d\\ude00", "x\\ufffd"]}'),
        (b'{"text": "\\ud83d\\ud83d\\ude00"}', b'{"text": "\\ufffd\\ud83d\\ude00"}'),
    ],
)
def test_lone_surrogate_escape_is_classified_as_the_replacement_character(
    client: TestClient[Any], body: bytes, replaced: bytes
) -> None:
    headers = {"content-type": "application/json"}
    response = client.post("/classify", content=body, headers=headers)
    assert response.status_code == 200, response.text
    expected = client.post("/classify", content=replaced, headers=headers)
    assert response.json()["results"] == expected.json()["results"]


def test_a_valid_surrogate_pair_and_an_escaped_backslash_are_fine(client: TestClient[Any]) -> None:
    pair = client.post(
        "/classify", content=b'{"text": "help \\ud83c\\udf0a"}', headers={"content-type": "application/json"}
    )
    assert pair.status_code == 200, pair.text
    literal = client.post(
        "/classify", content=b'{"text": "path \\\\ud800"}', headers={"content-type": "application/json"}
    )
    assert literal.status_code == 200, literal.text


def test_openapi_request_schema_is_as_strict_as_the_server(tiny_bundle_dir: Path) -> None:
    """The documented body agrees with the server: bodies the schema refuses get a 4xx, bodies it accepts
    (real texts) get a 200; exactly one of text/texts, no unknown fields, limits from the settings."""
    import jsonschema

    with serve(tiny_bundle_dir, max_items=3, max_text_chars=40) as client:
        document = client.get("/schema/openapi.json").json()
        body = document["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ClassifyRequest"}
        schema = document["components"]["schemas"]["ClassifyRequest"]
        one, many = schema["oneOf"]
        assert one["required"] == ["text"]
        assert many["required"] == ["texts"]
        assert one["additionalProperties"] is False
        assert many["additionalProperties"] is False
        assert one["properties"]["text"]["minLength"] == 1
        assert one["properties"]["text"]["maxLength"] == 40
        assert many["properties"]["texts"]["minItems"] == 1
        assert many["properties"]["texts"]["maxItems"] == 3
        top_k = one["properties"]["top_k"]["oneOf"][0]
        assert (top_k["minimum"], top_k["maximum"]) == (1, 1000)
        validator = jsonschema.Draft202012Validator(schema)
        accepted = [
            {"text": "we need water"},
            {"texts": ["we need water", "the road is closed"], "top_k": 1},
            {"text": "help", "return_all_scores": True, "truncate": False, "top_k": None},
        ]
        refused = [
            {},
            {"text": "a", "texts": ["b"]},
            {"text": None, "texts": ["b"]},
            {"text": ""},
            {"texts": []},
            {"texts": ["a", "b", "c", "d"]},
            {"text": "x" * 41},
            {"text": "a", "lang": "en"},
            {"text": "a", "top_k": 0},
            {"text": "a", "top_k": 1001},
            {"text": "a", "truncate": "false"},
        ]
        for case in accepted:
            assert validator.is_valid(case), case
            assert client.post("/classify", json=case).status_code == 200, case
        for case in refused:
            assert not validator.is_valid(case), case
            assert 400 <= client.post("/classify", json=case).status_code < 500, case
