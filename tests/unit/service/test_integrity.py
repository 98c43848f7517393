"""A bundle that fails its checks never becomes ready: /health/ready and /classify answer 503 with the reason,
and one clear log line names the file and the field."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import serve


def tamper_model(bundle: Path) -> None:
    with (bundle / "model.onnx").open("ab") as handle:
        handle.write(b"\0")


def remove_tokenizer(bundle: Path) -> None:
    (bundle / "tokenizer.json").unlink()


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        path = bundle / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))

    return apply


def _future_schema(manifest: dict[str, Any]) -> None:
    manifest["schema_version"] = 99


def _extra_label(manifest: dict[str, Any]) -> None:
    # The manifest promises three labels; the model outputs two.
    manifest["labels"] = [*manifest["labels"], "extra"]
    manifest["label_prior"] = {label: 1 / 3 for label in manifest["labels"]}


@dataclass(frozen=True)
class Breakage:
    name: str
    breaks: Callable[[Path], None]
    file_name: str
    """The file the log line and the reason must name."""
    field: str | None
    says: str


CASES = [
    Breakage("sha256 mismatch", tamper_model, "model.onnx", "files.model.onnx", "SHA-256 mismatch"),
    Breakage("missing tokenizer", remove_tokenizer, "tokenizer.json", None, "missing"),
    Breakage(
        "unknown schema version", edit_manifest(_future_schema), "manifest.json", "schema_version", "99"
    ),
    Breakage("outputs do not match labels", edit_manifest(_extra_label), "model.onnx", "labels", "3 labels"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_bundle_is_never_ready_and_says_why(
    tiny_bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: Breakage
) -> None:
    breaks, file_name, field, says = case.breaks, case.file_name, case.field, case.says
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    breaks(bundle)
    caplog.set_level(logging.INFO, logger="textclf.service")
    with serve(bundle, wait_ready=False) as client:
        deadline = time.monotonic() + 30
        while (ready := client.get("/health/ready")).json()["status"] == "loading":
            assert time.monotonic() < deadline, "still loading after 30 s"
            time.sleep(0.01)
        assert ready.status_code == 503
        ready = ready.json()
        assert ready["status"] == "not_ready"
        assert file_name in ready["reason"]
        assert says in ready["reason"]
        response = client.post("/classify", json={"text": "we need water"})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "not_ready"
        assert file_name in response.json()["error"]["message"]
        assert client.get("/health/live").status_code == 200
        assert "textclf_ready 0.0" in client.get("/metrics").text

    failures = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "bundle_invalid"]
    assert len(failures) == 1
    fields = failures[0].fields  # type: ignore[attr-defined]
    assert failures[0].levelname == "ERROR"
    assert fields["file"].endswith(file_name)
    assert fields["field"] == field
    assert says in fields["reason"]
