"""Shared fixtures. Every test runs offline: the Hugging Face Hub is off before anything imports it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random binary BERT checkpoint (config, weights, fast tokenizer), built once per session."""
    from tests.support.tiny_model import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_multilabel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random multi-label BERT checkpoint with four labels."""
    from tests.support.tiny_model import build_tiny_bert

    return build_tiny_bert(
        tmp_path_factory.mktemp("tiny-bert-multi"),
        labels=["request", "water", "food", "shelter"],
        problem_type="multi_label_classification",
    )


class BuildOnce:
    """Builds an expensive fixture once per test run and reports a failure once, not once per test.

    pytest re-raises a failed session fixture's exception, with its traceback, in every test that uses it
    (an AVX2 machine once printed 110 errors and 14,800 lines for one broken bundle). Here the first test to
    ask fails with the reason alone; every later one is skipped, pointing at that failure.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: Path | None = None
        self._error: str | None = None
        self._reported = False

    def get(self, build: Callable[[], Path]) -> Path:
        if self._value is None and self._error is None:
            try:
                self._value = build()
            except Exception as exc:
                self._error = f"{type(exc).__name__}: {exc}"
        if self._value is not None:
            return self._value
        if not self._reported:
            self._reported = True
            pytest.fail(f"the {self.name} fixture could not be built: {self._error}", pytrace=False)
        pytest.skip(f"the {self.name} fixture could not be built (reported once, as a failure, above)")


_TINY_BUNDLE = BuildOnce("tiny single-label bundle")
_TINY_MULTILABEL_BUNDLE = BuildOnce("tiny multi-label bundle")


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-label (binary ``related``) bundle exported by the real exporter from the tiny BERT run."""
    from tests.support.bundles import build_tiny_bundle

    return _TINY_BUNDLE.get(lambda: build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle")))


@pytest.fixture(scope="session")
def tiny_multilabel_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label (four categories, sigmoid, thresholds) bundle exported from the tiny BERT run."""
    from tests.support.bundles import build_tiny_bundle

    return _TINY_MULTILABEL_BUNDLE.get(
        lambda: build_tiny_bundle(tmp_path_factory.mktemp("tiny-multilabel-bundle"), multi_label=True)
    )
