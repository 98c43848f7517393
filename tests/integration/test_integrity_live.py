"""Promise 4: a bundle that is not what its manifest says never serves. Tested on the real process
(``python -m service``) and its real log output.

For each broken bundle the service stays up but never becomes ready: ``/health/ready`` and ``/classify``
answer 503 naming the file, and the log holds exactly one error line, a JSON ``bundle_invalid`` event naming
the file and the manifest field, and no traceback. The unit tests in ``tests/unit/service/test_integrity.py``
check the same through the in-process app; this checks what an operator sees.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.bundle import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, sha256_file
from tests.support.server import ServiceProcess, run_service

pytestmark = pytest.mark.slow


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def flip_a_byte(bundle: Path, other: Path) -> None:
    """Silent corruption: same size, one byte different."""
    path = bundle / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def remove_tokenizer(bundle: Path, other: Path) -> None:
    (bundle / TOKENIZER_FILE).unlink()


def future_schema_version(bundle: Path, other: Path) -> None:
    edit_manifest(bundle, lambda m: m.update(schema_version=m["schema_version"] + 1))


def swap_in_another_model(bundle: Path, other: Path) -> None:
    """The multi-label bundle's model (four outputs) in the binary bundle (two labels), with its checksum
    updated, as a careless copy or a wrong artifact in a deploy would do. Every checksum matches, so only a
    check of the model's outputs against the manifest's labels catches it."""
    shutil.copyfile(other / MODEL_FILE, bundle / MODEL_FILE)
    digest = sha256_file(bundle / MODEL_FILE)
    edit_manifest(bundle, lambda m: m["files"].update({MODEL_FILE: digest}))


@dataclass(frozen=True)
class Case:
    breaks: Callable[[Path, Path], None]
    file_name: str
    """The file the log line and the 503s must name."""
    field: str | None
    """The manifest field the log line must name."""
    says: str
    """Words the reason must hold."""


CASES = {
    "sha256 mismatch": Case(flip_a_byte, MODEL_FILE, f"files.{MODEL_FILE}", "SHA-256 mismatch"),
    "missing tokenizer": Case(remove_tokenizer, TOKENIZER_FILE, None, "missing"),
    "unknown schema version": Case(
        future_schema_version, MANIFEST_FILE, "schema_version", "unknown schema version"
    ),
    "model outputs do not match labels": Case(swap_in_another_model, MODEL_FILE, "labels", "2 labels"),
}


def wait_verdict(service: ServiceProcess, timeout: float = 60.0) -> httpx.Response:
    """/health/ready once the service has decided (no longer loading)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(service.base_url + "/health/ready", timeout=5)
        if response.json().get("status") != "loading":
            return response
        assert time.monotonic() < deadline, "still loading"
        time.sleep(0.05)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_broken_bundle_never_serves_and_says_why_in_one_line(
    tiny_bundle_dir: Path, tiny_multilabel_bundle_dir: Path, tmp_path: Path, case: Case
) -> None:
    file_name, field, says = case.file_name, case.field, case.says
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    case.breaks(bundle, tiny_multilabel_bundle_dir)

    with run_service(bundle, wait_ready=False, log_dir=tmp_path / "logs") as service:
        ready = wait_verdict(service)
        time.sleep(0.3)  # would a late success or a second failure follow? (they must not)
        again = httpx.get(service.base_url + "/health/ready", timeout=5)
        classify = httpx.post(service.base_url + "/classify", json={"text": "we need water"}, timeout=5)
        live = httpx.get(service.base_url + "/health/live", timeout=5)
        metrics = httpx.get(service.metrics_url, timeout=5).text
        assert service.process.poll() is None, "the process died instead of staying up, not ready"
        logs = service.logs()
        entries = service.json_logs()

    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert file_name in ready.json()["reason"]
    assert says in ready.json()["reason"]
    assert again.status_code == 503
    assert classify.status_code == 503
    assert classify.json()["error"]["type"] == "not_ready"
    assert file_name in classify.json()["error"]["message"]
    assert live.status_code == 200
    assert "\ntextclf_ready 0.0" in metrics

    errors = [e for e in entries if e.get("level") in {"error", "critical"}]
    assert len(errors) == 1, errors
    (line,) = errors
    assert line["event"] == "bundle_invalid"
    assert line["file"].endswith(file_name)
    assert line["field"] == field
    assert says in line["reason"]
    # One readable line: the message names the file (and the field), and there is no traceback anywhere.
    assert file_name in line["message"]
    if field:
        assert field in line["message"]
    assert "Traceback" not in logs
    assert not any(e.get("event") == "ready" for e in entries)
