"""The load tools send the service's API key when one is configured, and only then: the key comes from
``TEXTCLF_API_KEY`` or the file ``TEXTCLF_API_KEY_FILE`` names, wrk carries it in every request, and
``make loadtest`` stops with its own exit code when the service refuses it."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from loadtest import run
from loadtest.auth import ApiKeyError, api_key_from_env, auth_headers
from loadtest.exit_codes import ExitCode
from loadtest.wrk import run_wrk, write_bodies

KEY = "s3cret-key-for-tests"


def test_no_key_configured_sends_no_header() -> None:
    assert api_key_from_env({}) is None
    assert auth_headers({}) == {}
    # An empty or blank variable is "not set", as in a compose file that passes ${TEXTCLF_API_KEY:-}.
    assert api_key_from_env({"TEXTCLF_API_KEY": "  ", "TEXTCLF_API_KEY_FILE": ""}) is None


def test_key_from_the_environment() -> None:
    key = api_key_from_env({"TEXTCLF_API_KEY": f" {KEY}\n"})
    assert key is not None
    assert key.headers() == {"Authorization": f"Bearer {KEY}"}
    assert key.source == "TEXTCLF_API_KEY"
    # Printed or logged, the object names where the key came from, never the key.
    assert KEY not in repr(key)


def test_key_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(KEY + "\n", encoding="utf-8")  # secret files usually end with a newline
    assert auth_headers({"TEXTCLF_API_KEY_FILE": str(secret)}) == {"Authorization": f"Bearer {KEY}"}
    # As in the service's settings: an empty variable is unset, both set is an error.
    empty_and_file = {"TEXTCLF_API_KEY": "", "TEXTCLF_API_KEY_FILE": str(secret)}
    assert auth_headers(empty_and_file) == {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(ApiKeyError, match="not both"):
        api_key_from_env({"TEXTCLF_API_KEY": "from-env", "TEXTCLF_API_KEY_FILE": str(secret)})


def test_unreadable_or_empty_key_file_is_an_error_not_a_keyless_run(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="cannot read"):
        api_key_from_env({"TEXTCLF_API_KEY_FILE": str(tmp_path / "absent")})
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ApiKeyError, match="empty"):
        api_key_from_env({"TEXTCLF_API_KEY_FILE": str(empty)})


class KeyedHandler(http.server.BaseHTTPRequestHandler):
    """Answers like the service with a key: probes open, everything else needs ``Bearer KEY``."""

    seen_authorization: ClassVar[list[str | None]] = []

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        value = self.headers.get("Authorization")
        KeyedHandler.seen_authorization.append(value)
        return value == f"Bearer {KEY}"

    def do_GET(self) -> None:
        if self.path == "/health/ready":
            self._answer(200, {"status": "ready"})
        elif self._authorized():
            self._answer(200, {"labels": ["a", "b"]})
        else:
            self._answer(401, {"status_code": 401, "detail": "missing or wrong API key"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self._authorized():
            self._answer(200, {"results": []})
        else:
            self._answer(401, {"status_code": 401, "detail": "missing or wrong API key"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keyed_server() -> Iterator[str]:
    KeyedHandler.seen_authorization = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeyedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_loadtest_checks_the_key_before_the_run(keyed_server: str) -> None:
    key = api_key_from_env({"TEXTCLF_API_KEY": KEY})
    assert run.check_access(keyed_server, key) is None
    wrong = api_key_from_env({"TEXTCLF_API_KEY": "wrong"})
    assert "refused the API key from TEXTCLF_API_KEY" in (run.check_access(keyed_server, wrong) or "")
    assert "requires an API key" in (run.check_access(keyed_server, None) or "")


def test_loadtest_exit_codes_for_refused_and_unreadable_keys(
    keyed_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TEXTCLF_API_KEY", raising=False)
    monkeypatch.delenv("TEXTCLF_API_KEY_FILE", raising=False)
    argv = ["--host", keyed_server, "--out", str(tmp_path / "reports"), "--ready-timeout", "2"]
    assert run.main(argv) == ExitCode.UNAUTHORIZED
    assert "TEXTCLF_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("TEXTCLF_API_KEY_FILE", str(tmp_path / "absent"))
    assert run.main(argv) == ExitCode.UNAUTHORIZED
    assert "cannot read the key file" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # stopped before starting Locust


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_sends_the_authorization_header(keyed_server: str, tmp_path: Path) -> None:
    bodies = write_bodies([{"text": "flood"}], tmp_path / "bodies.jsonl")
    refused = run_wrk(keyed_server + "/classify", 1, 1, bodies)
    assert refused.throughput_rps == 0
    assert refused.errors["status"] > 0
    accepted = run_wrk(keyed_server + "/classify", 1, 1, bodies, authorization=f"Bearer {KEY}")
    assert accepted.errors["status"] == 0
    assert accepted.throughput_rps > 0
    assert f"Bearer {KEY}" in KeyedHandler.seen_authorization
