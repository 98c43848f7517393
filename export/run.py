"""Reading a training run directory (docs/CONTRACTS.md section 2): what the exporter needs from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from export.bundle import ProblemType


class RunDirError(Exception):
    """The run directory is missing a file the exporter needs, or a file is malformed."""


@dataclass(frozen=True)
class Example:
    """One evaluation message and its gold labels (one label for single-label runs)."""

    text: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class RunDir:
    """A training run, resolved: paths plus the parsed files the bundle describes."""

    path: Path
    """The run directory (symlinks such as ``artifacts/runs/latest`` resolved)."""
    model_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]
    labels: list[str]
    """Label names in the model's output order (``id2label`` of the checkpoint)."""
    problem_type: ProblemType
    thresholds: list[float] | None
    max_length: int
    truncation_side: str
    base_model: str
    task: str
    test_examples: list[Example] = field(repr=False)

    @property
    def run_id(self) -> str:
        return self.path.name


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return value


def read_examples(path: Path) -> list[Example]:
    """Read a ``{"text", "label"}`` or ``{"text", "labels"}`` JSONL file."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing (the parity gate compares on it)")
    examples: list[Example] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path}:{number}: not valid JSON: {exc}") from exc
        if "labels" in record:
            labels = tuple(str(label) for label in record["labels"])
        elif "label" in record:
            labels = (str(record["label"]),)
        else:
            raise RunDirError(f"{path}:{number}: needs 'label' or 'labels'")
        examples.append(Example(text=str(record["text"]), labels=labels))
    if not examples:
        raise RunDirError(f"{path}: no examples")
    return examples


def _thresholds(raw: object, labels: list[str], source: Path) -> list[float] | None:
    """``data.json`` thresholds as a list in label order (accepts a list or a label -> value mapping)."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        missing = [label for label in labels if label not in raw]
        if missing:
            raise RunDirError(f"{source}: thresholds missing for {missing}")
        return [float(raw[label]) for label in labels]
    if isinstance(raw, list) and len(raw) == len(labels):
        return [float(value) for value in raw]
    raise RunDirError(f"{source}: thresholds must be one per label")


def load_run_dir(path: Path | str) -> RunDir:
    """Parse a run directory. Raises ``RunDirError`` naming the first missing or malformed file."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory does not exist")
    path = path.resolve()
    model_dir = path / "model"
    model_config = _read_json(model_dir / "config.json")
    if not (model_dir / "tokenizer.json").is_file():
        raise RunDirError(f"{model_dir / 'tokenizer.json'}: missing (the bundle needs the fast tokenizer)")
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise RunDirError(f"{config_path}: missing")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    metrics = _read_json(path / "metrics.json")
    data = _read_json(path / "data.json")

    id2label = model_config.get("id2label") or {}
    labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if not labels:
        raise RunDirError(f"{model_dir / 'config.json'}: no id2label")
    hf_problem = model_config.get("problem_type") or ""
    problem_type: ProblemType = "multi_label" if hf_problem.startswith("multi_label") else "single_label"
    thresholds = _thresholds(data.get("thresholds"), labels, path / "data.json")
    if problem_type == "multi_label" and thresholds is None:
        thresholds = [0.5] * len(labels)

    model_section = config.get("model", {}) or {}
    tokenizer_config = {}
    if (model_dir / "tokenizer_config.json").is_file():
        tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    max_length = int(
        model_section.get("max_length")
        or min(
            int(tokenizer_config.get("model_max_length", 512)),
            int(model_config.get("max_position_embeddings", 512)),
        )
    )
    task_section = config.get("task", {}) or {}
    task = str(
        data.get("task")
        or (task_section.get("name") if isinstance(task_section, dict) else task_section)
        or "unknown"
    )
    return RunDir(
        path=path,
        model_dir=model_dir,
        config=config,
        metrics=metrics,
        data=data,
        labels=labels,
        problem_type=problem_type,
        thresholds=thresholds,
        max_length=max_length,
        truncation_side=str(tokenizer_config.get("truncation_side", "right")),
        base_model=str(model_section.get("base") or model_config.get("_name_or_path") or "unknown"),
        task=task,
        test_examples=read_examples(path / "eval" / "test.jsonl"),
    )
