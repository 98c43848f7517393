"""Service test fixtures: one app on the tiny bundle per module, and a bundle for ``FakeEngine``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support.app import serve
from tests.support.fakes import build_fake_bundle


@pytest.fixture(scope="module")
def client(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    """One app on the tiny single-label bundle, shared by a module's tests."""
    with serve(tiny_bundle_dir) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def fake_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a real tokenizer and a placeholder model, for tests that use ``FakeEngine``."""
    return build_fake_bundle(tmp_path_factory.mktemp("fake-bundle") / "fake-related")
