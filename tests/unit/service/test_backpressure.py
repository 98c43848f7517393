"""Bounded admission: with the batcher held, queue_size + k requests give exactly k 429s; a request past its
deadline gets 503; both are counted as rejections and the service recovers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.app import rejection_count, serve
from tests.support.fakes import GatedEngine, gated_factory


@pytest.mark.parametrize("k", [1, 3])
def test_queue_size_plus_k_requests_give_exactly_k_429(tiny_bundle_dir: Path, k: int) -> None:
    queue_size = 4
    gate = threading.Event()
    gate.set()  # warm-up runs freely
    engines: list[GatedEngine] = []
    with serve(tiny_bundle_dir, engine_factory=gated_factory(gate, engines), queue_size=queue_size) as client:
        gate.clear()
        responses: list[httpx.Response] = []
        lock = threading.Lock()

        def send(index: int) -> None:
            response = client.post("/classify", json={"text": f"we need water {index}"})
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(queue_size + k)]
        for thread in threads:
            thread.start()
        # The k refusals come back at once, while the admitted requests wait on the held engine.
        deadline = time.monotonic() + 30
        while len(responses) < k and time.monotonic() < deadline:
            time.sleep(0.01)
        with lock:
            early = [r.status_code for r in responses]
        gate.set()
        for thread in threads:
            thread.join(timeout=30)

        statuses = sorted(r.status_code for r in responses)
        assert early == [429] * k
        assert statuses == [200] * queue_size + [429] * k
        refused = [r for r in responses if r.status_code == 429]
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["type"] == "queue_full"
        assert rejection_count(client, "queue_full") == k
        # After the burst the queue is empty again and new requests pass.
        assert client.post("/classify", json={"text": "after"}).status_code == 200
        assert "textclf_queue_depth 0.0" in client.get("/metrics").text


def test_request_past_its_deadline_gets_503_and_the_service_recovers(tiny_bundle_dir: Path) -> None:
    gate = threading.Event()
    gate.set()
    engines: list[GatedEngine] = []
    with serve(
        tiny_bundle_dir,
        engine_factory=gated_factory(gate, engines),
        request_deadline_seconds=0.3,
        queue_size=8,
    ) as client:
        gate.clear()
        response = client.post("/classify", json={"text": "held"})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "deadline_exceeded"
        assert rejection_count(client, "deadline") == 1
        gate.set()
        assert client.post("/classify", json={"text": "released"}).status_code == 200
