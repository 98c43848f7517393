"""What the locustfile sets up for Locust: the web UI on loopback unless asked otherwise, and the API key on
every request when one is configured. Run in a child process: importing Locust monkey-patches the standard
library with gevent, which must not leak into the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import REPO_ROOT

PROBE = """
import json, sys
import loadtest.locustfile as locustfile
from locust.argument_parser import get_parser
parser = get_parser()
print(json.dumps({
    "default": parser.parse_args(["-f", "loadtest/locustfile.py"]).web_host,
    "asked": parser.parse_args(["-f", "loadtest/locustfile.py", "--web-host", "0.0.0.0"]).web_host,
    "headers": locustfile.ClassifyUser.default_headers,
}))
"""


def probe(**env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTCLF_API_KEY", "LOCUST_"))}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_web_ui_listens_on_loopback_unless_asked_otherwise() -> None:
    result = probe()
    assert result["default"] == "127.0.0.1"  # Locust's own default is every interface
    assert result["asked"] == "0.0.0.0"
    assert result["headers"] is None  # no key configured: no Authorization header
    assert probe(LOCUST_WEB_HOST="0.0.0.0")["default"] == "0.0.0.0"


def test_every_request_carries_the_configured_key() -> None:
    assert probe(TEXTCLF_API_KEY="k-123")["headers"] == {"Authorization": "Bearer k-123"}
