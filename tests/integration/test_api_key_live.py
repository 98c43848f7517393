"""Issue 16 on the real process (``python -m service`` under uvicorn): with ``TEXTCLF_API_KEY_FILE`` set, a
request without the key gets 401 and one with it 200, the probes and the separate metrics port still answer,
and neither the key nor a wrong key a client sent appears anywhere the service writes or answers: its whole
stderr/stdout (JSON lines and the plain ready line), /metrics, /info, error bodies and the OpenAPI document.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests.support.server import run_service

pytestmark = pytest.mark.slow


def test_key_on_the_real_process(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    wrong = secrets.token_hex(32)
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    env = {"TEXTCLF_API_KEY_FILE": str(key_file)}
    answers: list[httpx.Response] = []
    with run_service(
        tiny_bundle_dir, env=env, metrics_port="auto", log_level="DEBUG", log_dir=tmp_path / "logs"
    ) as service:
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            body = {"text": "we need water"}
            missing = client.post("/classify", json=body)
            bad = client.post("/classify", json=body, headers={"Authorization": f"Bearer {wrong}"})
            basic = client.post("/classify", json=body, headers={"Authorization": f"Basic {key}"})
            good = client.post("/classify", json=body, headers={"Authorization": f"Bearer {key}"})
            info = client.get("/info", headers={"Authorization": f"Bearer {key}"})
            info_missing = client.get("/info")
            invalid = client.post("/classify", content=b"{", headers={"Authorization": f"Bearer {key}"})
            answers += [missing, bad, basic, good, info, info_missing, invalid]
            answers += [
                client.get(path) for path in ("/health/live", "/health/ready", "/", "/schema/openapi.json")
            ]
        metrics = httpx.get(service.metrics_url, timeout=10)
        answers.append(metrics)
        output = service.logs()

    assert [a.status_code for a in answers] == [401, 401, 401, 200, 200, 401, 400, 200, 200, 200, 200, 200]
    for refused in (missing, bad, basic, info_missing):
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["type"] == "unauthorized"
    assert 'textclf_rejections_total{reason="auth_missing"} 3.0' in metrics.text
    assert 'textclf_rejections_total{reason="auth_wrong"} 1.0' in metrics.text
    assert '"event": "request"' in output
    assert "textclf: serving" in output
    assert "API key required" in output
    said = "\n".join([output, *(a.text for a in answers), *(str(dict(a.headers)) for a in answers)])
    assert key not in said
    assert wrong not in said
    assert "bearer" not in output.lower()
