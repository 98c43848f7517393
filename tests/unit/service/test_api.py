"""The API on the tiny exported bundle, through Litestar's test client: fields, batching invariance, top_k,
all scores, multi-label, headers, /info, health before and after warm-up, metrics, OpenAPI and the page."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from core.bundle import Bundle, load_bundle
from core.engine import Engine, OnnxEngine
from core.host import free_port
from service.app import create_app
from service.settings import Settings
from tests.support.app import http_scope, serve, wait_until

SHORT = "we need water"
MEDIUM = "families need food and tents after the flood destroyed houses in the village"
LONG = " ".join(["people trapped in the collapsed school please send rescue and medical aid"] * 3)
TEXTS = [SHORT, MEDIUM, "nice lunch today", LONG, "storm damage in the city", "help"]


def classify(client: TestClient[Any], **body: Any) -> dict[str, Any]:
    response = client.post("/classify", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_single_text_returns_every_field(client: TestClient[Any], tiny_bundle_dir: Path) -> None:
    manifest = load_bundle(tiny_bundle_dir).manifest
    body = classify(client, text=MEDIUM)
    assert set(body) == {"results", "model", "request_id"}
    assert body["model"] == {"name": manifest.name, "version": manifest.version}
    assert body["request_id"]
    (result,) = body["results"]
    assert result["label"] in manifest.labels
    assert 0.5 <= result["score"] <= 1.0  # softmax over two labels: the top one has at least half
    assert result["truncated"] is False
    assert result["num_tokens"] == len(OnnxEngine(load_bundle(tiny_bundle_dir)).tokenize([MEDIUM])[0].ids)
    assert "scores" not in result  # only when asked
    assert "labels" not in result  # multi-label only


def test_texts_come_back_in_input_order_with_the_same_scores_as_alone(client: TestClient[Any]) -> None:
    alone = {text: classify(client, text=text, return_all_scores=True)["results"][0] for text in TEXTS}
    # The same texts in several batch compositions: all together, reversed, each with a long neighbour.
    compositions = [TEXTS, TEXTS[::-1], *[[LONG, text, SHORT] for text in TEXTS]]
    for texts in compositions:
        results = classify(client, texts=texts, return_all_scores=True)["results"]
        assert len(results) == len(texts)
        for text, result in zip(texts, results, strict=True):
            expected = alone[text]
            assert result["label"] == expected["label"]
            assert result["num_tokens"] == expected["num_tokens"]
            for label, score in expected["scores"].items():
                assert result["scores"][label] == pytest.approx(score, abs=1e-4)


def test_concurrent_requests_batched_together_match_alone(client: TestClient[Any]) -> None:
    alone = {text: classify(client, text=text, return_all_scores=True)["results"][0] for text in TEXTS}
    answers: dict[int, dict[str, Any]] = {}

    def send(index: int) -> None:
        text = TEXTS[index % len(TEXTS)]
        answers[index] = client.post("/classify", json={"text": text, "return_all_scores": True}).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 24
    for index, body in answers.items():
        expected = alone[TEXTS[index % len(TEXTS)]]
        for label, score in expected["scores"].items():
            assert body["results"][0]["scores"][label] == pytest.approx(score, abs=1e-4)


def test_top_k_returns_the_k_best_labels_in_order(tiny_multilabel_bundle_dir: Path) -> None:
    with serve(tiny_multilabel_bundle_dir) as multi:
        everything = classify(multi, text=MEDIUM, return_all_scores=True)["results"][0]["scores"]
        best = sorted(everything.items(), key=lambda item: -item[1])
        for k in (1, 2, 4, 50):
            scores = classify(multi, text=MEDIUM, top_k=k)["results"][0]["scores"]
            assert list(scores) == [label for label, _ in best[: min(k, 4)]]
            for label, score in scores.items():
                assert score == pytest.approx(everything[label], abs=1e-6)


def test_return_all_scores_is_a_softmax_over_every_label(
    client: TestClient[Any], tiny_bundle_dir: Path
) -> None:
    labels = load_bundle(tiny_bundle_dir).manifest.labels
    result = classify(client, text=SHORT, return_all_scores=True)["results"][0]
    assert list(result["scores"]) == labels
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["score"] == pytest.approx(max(result["scores"].values()))
    assert result["label"] == max(result["scores"], key=result["scores"].get)


def test_multi_label_bundle_uses_sigmoids_and_thresholds(tiny_multilabel_bundle_dir: Path) -> None:
    manifest = load_bundle(tiny_multilabel_bundle_dir).manifest
    assert manifest.thresholds is not None
    with serve(tiny_multilabel_bundle_dir) as multi:
        results = classify(multi, texts=TEXTS, return_all_scores=True)["results"]
    for result in results:
        scores = result["scores"]
        assert list(scores) == manifest.labels
        assert all(0.0 < s < 1.0 for s in scores.values())
        over = [
            label
            for label, threshold in zip(manifest.labels, manifest.thresholds, strict=True)
            if scores[label] >= threshold
        ]
        assert result["labels"] == over
        assert result["label"] == max(scores, key=scores.get)


def test_long_text_is_truncated_or_refused_with_its_token_count(
    client: TestClient[Any], tiny_bundle_dir: Path
) -> None:
    max_length = load_bundle(tiny_bundle_dir).manifest.max_length
    text = " ".join(["flood"] * (max_length * 2))
    result = classify(client, text=text)["results"][0]
    assert result["truncated"] is True
    assert result["num_tokens"] == max_length * 2 + 2  # [CLS] + words + [SEP], counted before the cut
    refused = client.post("/classify", json={"texts": [SHORT, text], "truncate": False})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["type"] == "text_too_long"
    assert str(max_length * 2 + 2) in error["message"]
    assert error["detail"] == {
        "field": "texts[1]",
        "num_tokens": max_length * 2 + 2,
        "max_length": max_length,
    }


def test_headers_carry_request_id_and_timings(client: TestClient[Any]) -> None:
    response = client.post("/classify", json={"text": SHORT}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"
    for name in ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time"):
        assert float(response.headers[name]) >= 0.0, name
    assert float(response.headers["x-total-time"]) >= float(response.headers["x-inference-time"])

    generated = client.post("/classify", json={"text": SHORT})
    assert re.fullmatch(r"[0-9a-f]{16}", generated.headers["x-request-id"])
    # An id that is too long or holds odd characters (it goes into logs) is replaced, not echoed.
    hostile = client.post("/classify", json={"text": SHORT}, headers={"X-Request-ID": "a\tb" + "x" * 300})
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["x-request-id"])
    # Errors carry the request id too.
    assert client.get("/no-such-page", headers={"X-Request-ID": "err-1"}).headers["x-request-id"] == "err-1"


def test_info_shows_the_manifest_and_the_limits(tiny_bundle_dir: Path) -> None:
    manifest = load_bundle(tiny_bundle_dir).manifest
    with serve(tiny_bundle_dir, max_items=7, queue_size=9) as test_client:
        info = test_client.get("/info").json()
    assert info["name"] == manifest.name
    assert info["version"] == manifest.version
    assert info["labels"] == manifest.labels
    assert info["problem_type"] == "single_label"
    assert info["max_length"] == manifest.max_length
    assert info["quantization"]["mode"] == manifest.quantization.mode
    assert info["quantization"]["batch_invariant"] is True
    assert info["versions"] == manifest.versions
    assert info["limits"]["max_items"] == 7
    assert info["limits"]["queue_size"] == 9
    assert "files" not in info  # the public part only
    assert "training_metrics" not in info


def test_ready_only_after_warm_up(tiny_bundle_dir: Path) -> None:
    release = threading.Event()

    def slow_factory(bundle: Bundle, settings: Settings) -> Engine:
        release.wait(timeout=30)
        return OnnxEngine(bundle)

    with serve(tiny_bundle_dir, engine_factory=slow_factory, wait_ready=False) as test_client:
        assert test_client.get("/health/live").status_code == 200
        loading = test_client.get("/health/ready")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        refused = test_client.post("/classify", json={"text": SHORT})
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "not_ready"
        assert "textclf_ready 0.0" in test_client.get("/metrics").text
        release.set()
        wait_until(test_client, 200)
        assert test_client.get("/health/ready").json() == {"status": "ok"}
        assert test_client.post("/classify", json={"text": SHORT}).status_code == 200
        assert "textclf_ready 1.0" in test_client.get("/metrics").text


CONTRACT_METRICS = [
    "textclf_requests_total",
    "textclf_request_duration_seconds",
    "textclf_tokenization_duration_seconds",
    "textclf_queue_duration_seconds",
    "textclf_inference_duration_seconds",
    "textclf_batch_size",
    "textclf_batch_tokens",
    "textclf_input_tokens",
    "textclf_truncated_total",
    "textclf_texts_total",
    "textclf_queue_depth",
    "textclf_queue_capacity",
    "textclf_in_flight_requests",
    "textclf_predictions_total",
    "textclf_prediction_score",
    "textclf_rejections_total",
    "textclf_errors_total",
    "textclf_model_info",
    "textclf_label_prior",
    "textclf_ready",
    "process_resident_memory_bytes",
    "python_info",
]


def samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from the Prometheus text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def test_metrics_have_the_contract_names_and_move(tiny_bundle_dir: Path) -> None:
    manifest = load_bundle(tiny_bundle_dir).manifest
    with serve(tiny_bundle_dir, queue_size=17) as test_client:
        before = test_client.get("/metrics")
        assert before.headers["content-type"].startswith("text/plain")
        for name in CONTRACT_METRICS:
            assert re.search(rf"^# TYPE {name} ", before.text, re.M), name
        first = samples(before.text)
        classify(test_client, texts=[SHORT, MEDIUM, " ".join(["flood"] * 200)])
        after = samples(test_client.get("/metrics").text)

    ok = 'textclf_requests_total{method="POST",route="/classify",status="200"}'
    assert first.get(ok, 0.0) == 0.0
    assert after[ok] == 1.0
    assert after["textclf_texts_total"] - first["textclf_texts_total"] == 3
    assert after["textclf_truncated_total"] - first["textclf_truncated_total"] == 1
    assert after["textclf_input_tokens_count"] - first["textclf_input_tokens_count"] == 3
    # Warm-up is not counted; the long (truncated) text runs apart from the two short ones, which are
    # grouped by length rather than padded to it.
    batches = after["textclf_batch_size_count"]
    assert batches in (1, 2)
    assert after["textclf_batch_size_sum"] == 3
    assert after["textclf_batch_tokens_count"] == batches
    assert after["textclf_batch_tokens_sum"] < 3 * manifest.max_length or batches == 1
    assert after["textclf_inference_duration_seconds_count"] == batches
    assert after["textclf_queue_duration_seconds_count"] == 1
    assert after["textclf_tokenization_duration_seconds_count"] == 1
    predicted = sum(after[f'textclf_predictions_total{{label="{label}"}}'] for label in manifest.labels)
    assert predicted == 3
    scored = sum(after[f'textclf_prediction_score_count{{label="{label}"}}'] for label in manifest.labels)
    assert scored == 3
    info = (
        f'textclf_model_info{{name="{manifest.name}",quantization="{manifest.quantization.mode}",'
        f'version="{manifest.version}"}}'
    )
    assert after[info] == 1.0
    assert after["textclf_queue_capacity"] == 17
    assert after["textclf_queue_depth"] == 0
    for label in manifest.labels:
        assert after[f'textclf_label_prior{{label="{label}"}}'] == pytest.approx(manifest.label_prior[label])


def test_unknown_paths_add_no_metric_series(client: TestClient[Any]) -> None:
    client.get("/metrics")
    before = set(samples(client.get("/metrics").text))
    for path in ("/admin", "/classify/../etc/passwd", "/x/1", "/x/2", "/%00", "/wp-login.php?a=b"):
        assert client.get(path).status_code in (404, 400)
    assert client.put("/health/live").status_code == 405
    after = set(samples(client.get("/metrics").text))
    new = {key for key in after - before if "/metrics" not in key}
    assert new == set()


def test_openapi_schema_and_swagger_ui(client: TestClient[Any]) -> None:
    schema = client.get("/schema/openapi.json").json()
    classify_op = schema["paths"]["/classify"]["post"]
    assert set(classify_op["responses"]) >= {"200", "400", "413", "422", "429", "503"}
    assert "ClassifyRequest" in str(classify_op["requestBody"])
    assert client.get("/schema/swagger").status_code == 200


def test_swagger_ui_loads_its_assets_from_this_server(client: TestClient[Any]) -> None:
    """Offline, /schema/swagger must not depend on a CDN: every script and style it names is served here."""
    page = client.get("/schema/swagger").text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert len(assets) == 4, page
    for url in assets:
        assert url.startswith("/schema/assets/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 500
        assert response.headers["content-type"].startswith(("text/javascript", "text/css", "image/png"))
    assert client.get("/schema/assets/index.html").status_code == 404
    assert client.get("/schema/assets/..%2Fswagger-initializer.js").status_code == 404


def test_head_and_content_type_of_the_page(client: TestClient[Any]) -> None:
    head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""
    page = client.get("/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert head.headers["content-type"] == page.headers["content-type"]


def test_ready_line_says_where_to_go(tiny_bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(model_dir=tiny_bundle_dir, host="0.0.0.0", port=8123)
    with TestClient(create_app(settings, announce=True)) as test_client:
        wait_until(test_client)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("textclf: serving")]
    assert len(lines) == 1, err
    assert "at http://127.0.0.1:8123 (" in lines[0]
    assert "/schema/swagger" in lines[0]
    assert "all interfaces" in lines[0]


def test_page_is_self_contained_and_calls_the_api(client: TestClient[Any]) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<textarea" in html
    assert "/classify" in html
    # No CDN: nothing is loaded from another origin (links to our own docs are relative).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html


def test_cors_is_off_by_default_and_on_for_listed_origins(tiny_bundle_dir: Path) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    with serve(tiny_bundle_dir) as default:
        response = default.post("/classify", json={"text": SHORT}, headers=origin)
        assert "access-control-allow-origin" not in response.headers
    with serve(tiny_bundle_dir, cors_origins=("https://elsewhere.example",)) as allowing:
        response = allowing.post("/classify", json={"text": SHORT}, headers=origin)
        assert response.headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_metrics_can_move_to_their_own_port(tiny_bundle_dir: Path) -> None:
    port = free_port()
    with serve(tiny_bundle_dir, metrics_port=port) as test_client:
        assert test_client.get("/metrics").status_code == 404
        test_client.post("/classify", json={"text": SHORT})
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'textclf_requests_total{method="POST",route="/classify",status="200"} 1.0' in text


def test_client_disconnect_mid_body_is_not_a_server_error(tiny_bundle_dir: Path) -> None:
    app = create_app(Settings(model_dir=tiny_bundle_dir))
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b'{"text": "we ne', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"host", b"testserver")]
    scope = http_scope("/classify", headers, state={})
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 499
    metrics = app.state["metrics"].exposition().decode()
    assert 'textclf_errors_total{type="client_disconnected"} 1.0' in metrics
    assert 'status="500"' not in metrics
