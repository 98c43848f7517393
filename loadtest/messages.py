"""Request payloads for the load tests: real messages when the data cache exists, a small sample otherwise.

Order of preference:

1. the file named by ``LOADTEST_MESSAGES`` (JSON lines with a ``text`` field),
2. the prepared test split, ``artifacts/data/prepared/disaster_response-related/test.jsonl`` (``make data``),
   looked up from the working directory and from the repository root,
3. ``loadtest/sample_messages.jsonl``: about 200 short messages written for this repository (not taken from
   the dataset), so a load test runs on a fresh clone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.jsonl import JsonlError, read_jsonl

DATA_CACHE = Path("artifacts/data/prepared/disaster_response-related/test.jsonl")
SAMPLE_FILE = Path(__file__).with_name("sample_messages.jsonl")
REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "LOADTEST_MESSAGES"


@dataclass(frozen=True)
class Messages:
    """Texts to send and where they came from (printed at the start of a run)."""

    texts: list[str]
    source: Path


def candidate_paths() -> list[Path]:
    """Where messages are looked for, best first."""
    paths: list[Path] = []
    if override := os.environ.get(ENV_VAR):
        paths.append(Path(override))
    paths += [DATA_CACHE, REPO_ROOT / DATA_CACHE, SAMPLE_FILE]
    return paths


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    """Non-empty ``text`` fields of a JSON-lines file, in file order.

    Raises:
        ValueError: a line is not a JSON object with a string ``text`` (names the file and line), or the file
            holds no text.
    """
    texts: list[str] = []
    try:
        for number, record in read_jsonl(path):
            text = record.get("text")
            if not isinstance(text, str):
                raise ValueError(f"{path}:{number}: expected an object with a string 'text' field")
            if text.strip():
                texts.append(text)
            if limit is not None and len(texts) >= limit:
                break
    except JsonlError as exc:
        raise ValueError(str(exc)) from exc  # names the file and the line
    if not texts:
        raise ValueError(f"{path}: no messages in file")
    return texts


def load_messages(limit: int | None = None) -> Messages:
    """The first messages file that exists (see the module docstring).

    Raises:
        FileNotFoundError: ``LOADTEST_MESSAGES`` names a file that does not exist.
    """
    override = os.environ.get(ENV_VAR)
    if override and not Path(override).is_file():
        raise FileNotFoundError(f"{ENV_VAR}={override}: no such file")
    for path in candidate_paths():
        if path.is_file():
            return Messages(read_texts(path, limit), path)
    # The sample ships with the package, so this only happens in a broken install or a bad override.
    raise FileNotFoundError(f"no messages file found; looked at {', '.join(map(str, candidate_paths()))}")
