"""The training run directory: the one contract between the trainer and the exporter.

``docs/contracts.md`` section 2 describes it. ``python -m training`` writes one per run (rank 0 alone)::

    <runs_dir>/<YYYYmmdd-HHMMSS>-<name>/
        model/  config.yaml  metrics.json  data.json  eval/{validation,test}.jsonl
        training_curves.png  confusion_matrix.png  history.json  train.log
    <runs_dir>/latest -> <YYYYmmdd-HHMMSS>-<name>

The file names, the writer of the data files (``write_run_files``), the ``latest`` link (``update_latest``)
and the reader (``load_run_dir``) all live here. The trainer saves the checkpoint and the plots itself (they
need torch and matplotlib) at the paths named here. This module imports only the standard library and
PyYAML, so the exporter reads a run without importing ``training``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.bundle import ProblemType
from core.jsonl import JsonlError, read_jsonl, write_jsonl

MODEL_DIR = "model"
"""The ``save_pretrained`` checkpoint: ``config.json`` (with ``id2label``), weights, tokenizer."""
CONFIG_FILE = "config.yaml"
"""The resolved training config (every field, after overrides)."""
METRICS_FILE = "metrics.json"
"""Metrics per split (``validation``, ``test``) and of the training itself."""
DATA_FILE = "data.json"
"""Data fingerprint: source, sha256, labels, split sizes, label counts and prior, thresholds."""
HISTORY_FILE = "history.json"
"""Loss and validation figures per step, for the curves."""
VALIDATION_FILE = "eval/validation.jsonl"
TEST_FILE = "eval/test.jsonl"
"""The run's evaluation splits, one ``{"text", "label"}`` or ``{"text", "labels"}`` object per line; the
exporter's parity gate reads the test split, its int8 calibration the validation split."""
TRAINING_CURVES_FILE = "training_curves.png"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
LOG_FILE = "train.log"
LATEST_LINK = "latest"
"""``<runs_dir>/latest``: a relative symlink to the newest run."""

RUN_DIR_FILES = (
    f"{MODEL_DIR}/config.json",
    f"{MODEL_DIR}/model.safetensors",
    f"{MODEL_DIR}/tokenizer.json",
    CONFIG_FILE,
    METRICS_FILE,
    DATA_FILE,
    TEST_FILE,
    VALIDATION_FILE,
    TRAINING_CURVES_FILE,
    CONFUSION_MATRIX_FILE,
)
"""Files every finished run directory holds; the exporter and the tests rely on them."""


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_run_files(
    run_dir: Path,
    *,
    config_yaml: str,
    metrics: Mapping[str, Any],
    data: Mapping[str, Any],
    history: Mapping[str, Any],
    validation: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
) -> None:
    """Write the data files of a run directory: config, metrics, data fingerprint, history, eval splits."""
    _write_text(run_dir / CONFIG_FILE, config_yaml)
    _write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    _write_text(run_dir / DATA_FILE, json.dumps(data, indent=2) + "\n")
    _write_text(run_dir / HISTORY_FILE, json.dumps(history) + "\n")
    write_jsonl(run_dir / VALIDATION_FILE, validation)
    write_jsonl(run_dir / TEST_FILE, test)


def update_latest(run_dir: Path) -> Path:
    """Point ``<parent>/latest`` at ``run_dir`` (relative symlink, replaced atomically)."""
    link = run_dir.parent / LATEST_LINK
    partial = run_dir.parent / f".{LATEST_LINK}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(run_dir.name, target_is_directory=True)
    partial.replace(link)
    return link


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
    try:
        records = list(read_jsonl(path))
    except JsonlError as exc:
        raise RunDirError(str(exc)) from exc
    for number, record in records:
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
    model_dir = path / MODEL_DIR
    model_config = _read_json(model_dir / "config.json")
    if not (model_dir / "tokenizer.json").is_file():
        raise RunDirError(f"{model_dir / 'tokenizer.json'}: missing (the bundle needs the fast tokenizer)")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunDirError(f"{config_path}: missing")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    metrics = _read_json(path / METRICS_FILE)
    data = _read_json(path / DATA_FILE)

    id2label = model_config.get("id2label") or {}
    labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if not labels:
        raise RunDirError(f"{model_dir / 'config.json'}: no id2label")
    hf_problem = model_config.get("problem_type") or ""
    problem_type: ProblemType = "multi_label" if hf_problem.startswith("multi_label") else "single_label"
    thresholds = _thresholds(data.get("thresholds"), labels, path / DATA_FILE)
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
        test_examples=read_examples(path / TEST_FILE),
    )
