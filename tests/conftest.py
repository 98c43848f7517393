"""Shared fixtures. Every test runs offline: the Hugging Face Hub is off before anything imports it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random binary BERT checkpoint (config, weights, fast tokenizer), built once per session."""
    from tests.fixtures.tiny_model import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_multilabel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random multi-label BERT checkpoint with four labels."""
    from tests.fixtures.tiny_model import build_tiny_bert

    return build_tiny_bert(
        tmp_path_factory.mktemp("tiny-bert-multi"),
        labels=["request", "water", "food", "shelter"],
        problem_type="multi_label_classification",
    )


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-label (binary ``related``) bundle exported by the real exporter from the tiny BERT run."""
    from tests.fixtures.bundles import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture(scope="session")
def tiny_multilabel_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label (four categories, sigmoid, thresholds) bundle exported from the tiny BERT run."""
    from tests.fixtures.bundles import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-multilabel-bundle"), multi_label=True)
