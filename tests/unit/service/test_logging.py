"""One JSON log line per request with its id, route, status, duration, texts and batch size; the request text
appears only when the debug setting asks for it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from service.logging import JsonFormatter
from tests.support.app import serve

SECRET = "my name is alice and i need water at 12 river road"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "request"
    ]


def test_one_line_per_request_without_the_text(
    tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="textclf.service")
    with serve(tiny_bundle_dir) as client:
        caplog.clear()
        client.post("/classify", json={"texts": [SECRET, SECRET.upper()]}, headers={"X-Request-ID": "req-42"})
        client.post("/classify", json={"text": ""})
        client.get("/nowhere")
    lines = request_lines(caplog)
    assert [line["status"] for line in lines] == [200, 400, 404]
    ok = lines[0]
    assert ok["request_id"] == "req-42"
    assert ok["route"] == "/classify"
    assert ok["method"] == "POST"
    assert ok["num_texts"] == 2
    assert ok["batch_size"] >= 2
    assert ok["duration_seconds"] > 0
    assert lines[1]["error_type"] == "empty_text"
    assert lines[2]["route"] == "unmatched"  # never the raw path
    everything = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert "alice" not in everything
    assert "/nowhere" not in everything


def test_debug_setting_logs_the_text(tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="textclf.service")
    with serve(tiny_bundle_dir, log_request_text=True) as client:
        caplog.clear()
        client.post("/classify", json={"text": SECRET})
    (line,) = request_lines(caplog)
    assert line["texts"] == [SECRET]


def test_formatter_writes_one_json_object_per_record() -> None:
    record = logging.LogRecord("textclf.service", logging.ERROR, __file__, 1, "boom", None, None)
    record.fields = {"event": "bundle_invalid", "file": "model.onnx", "field": "files.model.onnx"}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["event"] == "bundle_invalid"
    assert entry["file"] == "model.onnx"
    assert entry["message"] == "boom"
