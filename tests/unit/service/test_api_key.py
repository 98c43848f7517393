"""The optional API key (issue 16).

With none configured everything is open. With one, POST /classify and /info need ``Authorization: Bearer
<key>`` and answer 401 in the one error shape otherwise, while the probes, the metrics (on either port),
the page and /schema stay open. The key never shows in logs, metrics, /info, error bodies or the OpenAPI
document, and neither does what a client sent in ``Authorization``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from core.host import free_port
from service.logging import JsonFormatter
from tests.support import REPO_ROOT
from tests.support.app import serve

KEY = "k3y-" + "5f0c2b9e7d1a4c6e8b3f0a2d4e6c8b1a"
WRONG = "wr0ng-" + "9e8d7c6b5a4f3e2d1c0b"
BODY = {"text": "we need water"}


@pytest.fixture(scope="module")
def keyed(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    with serve(tiny_bundle_dir, api_key=KEY) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rejections(client: TestClient[Any], reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'textclf_rejections_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no rejections series for {reason}")


def check_401(response: httpx.Response, invalid_token: bool) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in response.headers["www-authenticate"]) == invalid_token
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"type", "message", "detail"}
    assert payload["error"]["type"] == "unauthorized"
    assert "Bearer" in payload["error"]["message"] or invalid_token
    assert response.headers["x-request-id"]
    error: dict[str, Any] = payload["error"]
    return error


def test_no_key_configured_everything_is_open(client: TestClient[Any]) -> None:
    assert client.post("/classify", json=BODY).status_code == 200
    assert client.get("/info").status_code == 200
    # An Authorization header is ignored, whatever it holds.
    assert client.post("/classify", json=BODY, headers=bearer(WRONG)).status_code == 200
    schema = client.get("/schema/openapi.json").json()
    assert "security" not in schema["paths"]["/classify"]["post"]
    assert "401" not in schema["paths"]["/classify"]["post"]["responses"]


def test_right_key_is_let_in(keyed: TestClient[Any]) -> None:
    response = keyed.post("/classify", json=BODY, headers=bearer(KEY))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["label"]
    info = keyed.get("/info", headers=bearer(KEY))
    assert info.status_code == 200
    # The scheme name is case-insensitive (RFC 9110 section 11.1).
    assert keyed.post("/classify", json=BODY, headers={"Authorization": f"bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason", "invalid_token"),
    [
        ({}, "auth_missing", False),
        ({"Authorization": ""}, "auth_missing", False),
        ({"Authorization": "Bearer"}, "auth_missing", False),
        ({"Authorization": "Bearer   "}, "auth_missing", False),
        ({"Authorization": f"Basic {KEY}"}, "auth_missing", False),
        ({"Authorization": KEY}, "auth_missing", False),
        ({"Authorization": f"Bearer {WRONG}"}, "auth_wrong", True),
        ({"Authorization": f"Bearer {KEY[:-1]}"}, "auth_wrong", True),
        ({"Authorization": f"Bearer {KEY}x"}, "auth_wrong", True),
        ({"Authorization": f"Bearer {KEY.upper()}"}, "auth_wrong", True),
    ],
    ids=[
        "no header",
        "empty",
        "scheme only",
        "blank key",
        "Basic",
        "no scheme",
        "wrong",
        "prefix",
        "longer",
        "case",
    ],
)
def test_missing_malformed_or_wrong_key_is_a_401_counted_by_reason(
    keyed: TestClient[Any], headers: dict[str, str], reason: str, invalid_token: bool
) -> None:
    before = rejections(keyed, reason)
    error = check_401(keyed.post("/classify", json=BODY, headers=headers), invalid_token)
    check_401(keyed.get("/info", headers=headers), invalid_token)
    assert rejections(keyed, reason) == before + 2
    assert KEY not in str(error)


def test_refused_before_the_body_is_read(keyed: TestClient[Any]) -> None:
    """A stranger's body is never decoded: an invalid body without the key is a 401, not a 400."""
    response = keyed.post("/classify", content=b"not json", headers={"content-type": "application/json"})
    check_401(response, invalid_token=False)


def test_probes_metrics_page_and_schema_stay_open(keyed: TestClient[Any]) -> None:
    assert keyed.get("/health/live").status_code == 200
    assert keyed.get("/health/ready").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    assert keyed.get("/").status_code == 200
    assert keyed.get("/schema/openapi.json").status_code == 200
    assert keyed.get("/schema/swagger").status_code == 200


def test_separate_metrics_port_stays_open(tiny_bundle_dir: Path) -> None:
    port = free_port()
    with serve(tiny_bundle_dir, api_key=KEY, metrics_port=port) as client:
        assert client.post("/classify", json=BODY).status_code == 401
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'textclf_rejections_total{reason="auth_missing"} 1.0' in text


def test_openapi_declares_the_scheme_but_never_the_key(keyed: TestClient[Any]) -> None:
    document = keyed.get("/schema/openapi.json")
    schema = document.json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's API key: `Authorization: Bearer <key>`.",
    }
    for path, method in (("/classify", "post"), ("/info", "get")):
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"apiKey": []}]
        assert "401" in operation["responses"]
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert "security" not in schema["paths"][path]["get"]
    assert KEY not in document.text


def test_key_and_sent_credentials_never_leak(tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Everything the service said during a run with a key (every log record at DEBUG, every response body
    and header, /metrics, /info, /schema) is searched for the key and for what clients sent."""
    caplog.set_level(logging.DEBUG)
    said: list[str] = []
    with serve(tiny_bundle_dir, api_key=KEY) as client:
        responses = [
            client.post("/classify", json=BODY, headers=bearer(KEY)),
            client.post("/classify", json=BODY, headers=bearer(WRONG)),
            client.post("/classify", json=BODY, headers={"Authorization": f"Basic {WRONG}"}),
            client.post("/classify", json={"text": ""}, headers=bearer(KEY)),
            client.post("/classify", content=b"{", headers=bearer(KEY)),
            client.get("/info", headers=bearer(KEY)),
            client.get("/info", headers=bearer(WRONG)),
            client.get("/metrics"),
            client.get("/schema/openapi.json"),
            client.get("/nowhere", headers=bearer(KEY)),
        ]
        for response in responses:
            said.append(response.text)
            said.append(str(dict(response.headers)))
    assert [r.status_code for r in responses] == [200, 401, 401, 400, 400, 200, 401, 200, 200, 404]
    logs = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert '"event": "request"' in logs, "no request was logged: the search would prove nothing"
    everything = "\n".join([*said, logs])
    assert KEY not in everything
    assert WRONG not in everything
    # No header is logged at all, so neither is Authorization.
    assert "authorization" not in logs.lower()
    assert "bearer" not in logs.lower()


def test_settings_repr_and_info_hide_the_key(keyed: TestClient[Any]) -> None:
    from service.settings import Settings

    assert KEY not in repr(Settings(api_key=KEY))
    info = keyed.get("/info", headers=bearer(KEY)).json()
    assert KEY not in str(info)


def test_kubernetes_reads_the_key_from_an_optional_secret() -> None:
    import yaml

    deployment = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    (entry,) = [e for e in api.get("env", []) if e["name"] == "TEXTCLF_API_KEY"]
    ref = entry["valueFrom"]["secretKeyRef"]
    # optional: without the Secret the pod starts with the API open, as before the key existed.
    assert ref == {"name": "textclf-api-key", "key": "api-key", "optional": True}
    probes = [api[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert set(probes) <= {"/health/live", "/health/ready"}  # open routes: probes carry no key


def test_compose_override_mounts_the_key_as_a_secret() -> None:
    import yaml

    override = yaml.safe_load((REPO_ROOT / "deploy" / "compose-api-key.yml").read_text())
    api = override["services"]["api"]
    assert api["environment"]["TEXTCLF_API_KEY_FILE"] == "/run/secrets/textclf_api_key"
    assert api["secrets"] == ["textclf_api_key"]
    # No default: compose refuses to start without the file instead of running open.
    assert override["secrets"]["textclf_api_key"]["file"].startswith("${API_AUTH_FILE:?")
