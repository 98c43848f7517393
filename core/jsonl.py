"""JSON lines: one JSON object per line. The one reader and the one writer of the repository.

The data cache, a run's evaluation splits, a user's JSONL data file and the load tests' message files all use
this format. Standard library only, so any image (the Locust one included) can import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line that is not a JSON object; names the file and the line (1-based)."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


def read_jsonl(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for every non-blank line, in file order.

    Raises:
        JsonlError: a line is not valid JSON, or not a JSON object.
    """
    with path.open(encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise JsonlError(path, number, f"not valid JSON: {error.msg}") from error
            if not isinstance(record, dict):
                raise JsonlError(path, number, "each line must be a JSON object")
            yield number, record


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """One JSON object per line (UTF-8, not ASCII-escaped), written to a side file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
