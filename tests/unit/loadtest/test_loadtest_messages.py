"""Payload selection: data cache when present, the shipped sample otherwise, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import messages


def test_shipped_sample_has_about_200_distinct_messages() -> None:
    texts = messages.read_texts(messages.SAMPLE_FILE)
    assert 150 <= len(texts) <= 300
    assert len(set(texts)) == len(texts)


def test_override_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in ["one", "  ", "two"]))
    monkeypatch.setenv(messages.ENV_VAR, str(path))
    loaded = messages.load_messages()
    assert loaded.source == path
    assert loaded.texts == ["one", "two"]  # blank texts would be 4xx by design, not load


def test_cache_is_used_when_present_else_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(messages.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(messages, "REPO_ROOT", tmp_path / "elsewhere")
    assert messages.load_messages().source == messages.SAMPLE_FILE
    cache = tmp_path / messages.DATA_CACHE
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"text": "real message", "label": "related"}) + "\n")
    loaded = messages.load_messages()
    assert loaded.source == messages.DATA_CACHE
    assert loaded.texts == ["real message"]


def test_missing_override_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(messages.ENV_VAR, str(tmp_path / "absent.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        messages.load_messages()


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"label": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected an object with a string 'text'"):
        messages.read_texts(path)
