"""Promise 6b: what a running service reveals, checked on the real process (``python -m service``, uvicorn,
its stderr log and its /metrics).

- Request text is never logged by default (not in the request line, not in an error, not in uvicorn's own
  logs) and never becomes a metric label, on success and on every error path; the debug setting
  ``--log-request-text`` does log it (so the grep would catch a leak).
- Unknown paths and methods create no metric series and do not echo the path into labels.
- CORS is off by default: no ``Access-Control-Allow-Origin`` on a cross-origin request or preflight.
- ``/metrics`` moves to a separate port on the same (loopback) interface and leaves the API port.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.server import ServiceProcess, run_service

pytestmark = pytest.mark.slow

ORIGIN = "https://attacker.example"


@pytest.fixture(scope="module")
def service(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with run_service(
        tiny_bundle_dir, log_dir=tmp_path_factory.mktemp("security-logs"), max_text_chars=2000
    ) as running:
        yield running


def series(metrics_text: str) -> set[str]:
    """Every sample's name and labels (the value left out)."""
    return {
        line.rpartition(" ")[0] for line in metrics_text.splitlines() if line and not line.startswith("#")
    }


def send_marked_requests(base_url: str, marker: str) -> dict[str, int]:
    """The marker in every place a request can carry text, on success and on each error path."""
    long_text = f"{marker} " + " ".join(["flood"] * 300)
    cases: dict[str, tuple[str, object]] = {
        "single text": ("json", {"text": f"we need water {marker}"}),
        "text list": ("json", {"texts": ["help", f"{marker} the bridge is down"]}),
        "top_k and scores": ("json", {"text": marker, "top_k": 2, "return_all_scores": True}),
        "control character": ("json", {"text": f"{marker}\u0007"}),
        "lone surrogate": ("raw", f'{{"text": "{marker}\\ud800"}}'),
        "too long, truncate=false": ("json", {"text": long_text, "truncate": False}),
        "too many characters": ("json", {"text": marker * 200}),
        "unknown field": ("json", {"text": "hello", marker: 1}),
        "wrong type": ("json", {"texts": marker}),
        "invalid JSON": ("raw", f'{{"text": "{marker}'),
        "whitespace only": ("json", {"texts": ["ok", "   "], "note": marker}),
    }
    statuses = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for name, (kind, body) in cases.items():
            if kind == "json":
                response = client.post("/classify", json=body)
            else:
                response = client.post(
                    "/classify", content=str(body).encode(), headers={"content-type": "application/json"}
                )
            statuses[name] = response.status_code
    return statuses


def test_request_text_is_never_logged_nor_a_metric_label(service: ServiceProcess) -> None:
    marker = f"marker{uuid.uuid4().hex}"
    statuses = send_marked_requests(service.base_url, marker)
    metrics = httpx.get(service.metrics_url, timeout=10).text

    # The cases covered success and the error paths (so the log had the chance to leak on each).
    assert statuses["single text"] == statuses["text list"] == statuses["top_k and scores"] == 200
    assert {statuses[k] for k in statuses} >= {200, 400, 422}
    request_lines = [e for e in service.json_logs() if e.get("event") == "request"]
    assert len(request_lines) >= len(statuses)
    assert marker not in service.logs()
    assert marker not in metrics


def test_debug_setting_logs_request_text(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """The opt-in exists and works, and still never reaches the metrics."""
    marker = f"marker{uuid.uuid4().hex}"
    with run_service(tiny_bundle_dir, log_request_text=True, log_dir=tmp_path) as debug_service:
        httpx.post(debug_service.base_url + "/classify", json={"text": f"{marker} flood"}, timeout=30)
        metrics = httpx.get(debug_service.metrics_url, timeout=10).text
        logs = debug_service.logs()
    assert marker in logs
    assert marker not in metrics


def test_unknown_paths_and_methods_create_no_metric_series(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        client.get("/metrics")  # the scrape's own series exist from here on
        before = series(client.get("/metrics").text)
        tag = uuid.uuid4().hex
        answers = [client.get(f"/{tag}/{i}") for i in range(25)]
        answers += [client.get(f"/classify/{tag}"), client.post(f"/admin/{tag}", json={})]
        answers += [client.request(method, "/classify") for method in ("GET", "PUT", "DELETE", "PATCH")]
        answers += [client.request("PROPFIND", f"/{tag}")]
        after_text = client.get("/metrics").text
    assert {a.status_code for a in answers} <= {404, 405}
    assert all(a.json()["error"]["type"] in {"not_found", "method_not_allowed"} for a in answers)
    assert series(after_text) == before
    assert tag not in after_text


def test_cors_is_off_by_default(service: ServiceProcess) -> None:
    headers = {"Origin": ORIGIN}
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        simple = client.post("/classify", json={"text": "we need water"}, headers=headers)
        info = client.get("/info", headers=headers)
        preflight = client.options(
            "/classify",
            headers={
                **headers,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert simple.status_code == 200
    for response in (simple, info, preflight):
        cors = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        assert cors == {}, (response.request.method, response.request.url, cors)


def test_cors_allows_only_listed_origins_when_configured(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    allowed = "https://app.example"
    with (
        run_service(tiny_bundle_dir, cors_origins=(allowed,), log_dir=tmp_path) as cors_service,
        httpx.Client(base_url=cors_service.base_url, timeout=10) as client,
    ):
        good = client.get("/info", headers={"Origin": allowed})
        bad = client.get("/info", headers={"Origin": ORIGIN})
    assert good.headers.get("access-control-allow-origin") == allowed
    assert bad.headers.get("access-control-allow-origin") in {None, allowed}
    assert ORIGIN not in json.dumps(dict(bad.headers))


def test_metrics_move_to_a_separate_loopback_port(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with run_service(tiny_bundle_dir, metrics_port="auto", log_dir=tmp_path) as split:
        assert split.metrics_port is not None
        httpx.post(split.base_url + "/classify", json={"text": "flood"}, timeout=30)
        on_api_port = httpx.get(split.base_url + "/metrics", timeout=10)
        on_metrics_port = httpx.get(split.metrics_url, timeout=10)
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(split.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
    assert on_api_port.status_code == 404
    assert on_metrics_port.status_code == 200
    assert 'textclf_requests_total{method="POST",route="/classify",status="200"} 1.0' in on_metrics_port.text
    # Both listeners on loopback only, as the service was told (--host 127.0.0.1).
    assert listening == {("127.0.0.1", split.port), ("127.0.0.1", split.metrics_port)}
