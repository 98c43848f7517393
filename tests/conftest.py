"""Shared fixtures, and the rule that a test's folder decides its marker. Every test runs offline: the Hugging
Face Hub is off before anything imports it."""

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

TESTS_DIR = Path(__file__).resolve().parent
# tests/<folder>/... -> marker. ``slow`` (and ``timeout``) stay per test: they cut across the folders.
FOLDER_MARKERS = {
    "unit": "unit",
    "fuzz": "fuzz",
    "integration": "integration",
    "quality": "quality",
    "compose": "compose",
}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with its folder's marker, so ``-m unit`` and ``tests/unit`` select the same tests.

    A test outside these folders, or one that carries another folder's marker, stops the collection: it would
    otherwise run in a make target that does not run its folder, or in none.
    """
    problems = []
    for item in items:
        try:
            relative = item.path.resolve().relative_to(TESTS_DIR)
        except ValueError:  # a path outside tests/ given on the command line: not ours to mark
            continue
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        marker = FOLDER_MARKERS.get(folder)
        if marker is None:
            problems.append(f"{item.nodeid}: not in one of the folders tests/{{{','.join(FOLDER_MARKERS)}}}")
            continue
        others = sorted({m.name for m in item.iter_markers() if m.name in FOLDER_MARKERS.values()} - {marker})
        if others:
            problems.append(
                f"{item.nodeid}: marked {', '.join(others)} but in tests/{folder}/ (marker {marker})"
            )
            continue
        item.add_marker(marker)
    if problems:
        raise pytest.UsageError(
            "a test's folder decides its marker; move these tests:\n  " + "\n  ".join(problems)
        )


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
