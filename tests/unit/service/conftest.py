"""Service test helpers: build an app on a bundle, run its lifespan through Litestar's test client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from service.app import EngineFactory, create_app
from service.settings import Settings
from tests.unit.service.fakes import build_fake_bundle


def wait_until(client: TestClient[Any], status: int = 200, timeout: float = 30.0) -> None:
    """Poll /health/ready until it answers ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health/ready")
        if response.status_code == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"/health/ready stayed {response.status_code}: {response.text}")
        time.sleep(0.01)


@contextmanager
def serve(
    bundle_dir: Path,
    engine_factory: EngineFactory | None = None,
    wait_ready: bool = True,
    **settings: Any,
) -> Iterator[TestClient[Any]]:
    """A test client on a fresh app for ``bundle_dir``; waits for ready unless told not to."""
    app = create_app(Settings(model_dir=bundle_dir, **settings), engine_factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        if wait_ready:
            wait_until(client)
        yield client


@pytest.fixture(scope="module")
def client(tiny_bundle_dir: Path) -> Iterator[TestClient[Any]]:
    """One app on the tiny single-label bundle, shared by a module's tests."""
    with serve(tiny_bundle_dir) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def fake_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a real tokenizer and a placeholder model, for tests that use ``FakeEngine``."""
    return build_fake_bundle(tmp_path_factory.mktemp("fake-bundle") / "fake-related")
