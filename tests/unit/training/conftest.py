"""Fixtures for the training unit tests: synthetic data files, configs that train the tiny BERT in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT
from tests.support.data import write_figure_eight_csv, write_kaggle_csv
from training.config import Config, load_config


@pytest.fixture
def figure_eight_csv(tmp_path: Path) -> Path:
    return write_figure_eight_csv(tmp_path / "messages.csv")


@pytest.fixture
def kaggle_csv(tmp_path: Path) -> Path:
    return write_kaggle_csv(tmp_path / "train.csv")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML config for a small, fast run in ``tmp_path`` and return its path."""

    def write(name: str = "tiny", **sections: Any) -> Path:
        base: dict[str, Any] = {
            "runs_dir": str(tmp_path / "runs"),
            "data": {"cache_dir": str(tmp_path / "cache")},
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "eval_batch_size": 16,
                "learning_rate": 5e-3,
                "warmup_ratio": 0.0,
                "progress": False,
                "log_every_steps": 5,
                "early_stopping_patience": 0,
            },
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_merge(base, sections)), encoding="utf-8")
        return path

    return write


@pytest.fixture
def related_config(write_config: Callable[..., Path], figure_eight_csv: Path, tiny_bert_dir: Path) -> Path:
    """Binary `related` on the synthetic Figure Eight CSV, read as a generic file, with the tiny model."""
    return write_config(
        data={
            "source": "file",
            "path": str(figure_eight_csv),
            "name": "figure_eight",
            "label_column": "related",
            "label_map": {"0": "not_related", "1": "related"},
            "drop_label_values": ["2"],
        },
        task={"name": "related", "problem_type": "single_label"},
        model={"base": str(tiny_bert_dir), "max_length": 32},
    )


@pytest.fixture
def tiny_kaggle_config(kaggle_csv: Path, tiny_bert_dir: Path, tmp_path: Path) -> Callable[..., Config]:
    """The shipped Kaggle tweets config on the synthetic Kaggle CSV and the tiny model, writing in
    ``tmp_path``; the given overrides go on top."""

    def load(*overrides: str) -> Config:
        return load_config(
            REPO_ROOT / "training" / "configs" / "kaggle_tweets.yaml",
            [
                f"data.path={kaggle_csv}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"runs_dir={tmp_path / 'runs'}",
                f"model.base={tiny_bert_dir}",
                "train.progress=false",
                *overrides,
            ],
        )

    return load
