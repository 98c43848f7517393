"""Quality fixtures: the real quick profile on the real dataset, trained once per session.

``quick_run_dir`` runs ``python -m training --config training/configs/quick.yaml`` into a temporary runs
folder (the data cache is the repository's ``artifacts/data``, fetched with pip on first use). Set
``TEXTCLF_QUALITY_RUN_DIR`` to an existing run directory (e.g. ``artifacts/runs/latest``) to skip training
while iterating locally. The export stage's quality test reuses this fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO_ROOT

QUICK_CONFIG = REPO_ROOT / "training" / "configs" / "quick.yaml"
RUN_DIR_ENV = "TEXTCLF_QUALITY_RUN_DIR"


QUICK_RUN_TIMEOUT_SECONDS = 2400


def _given(env: str, required: str, what: str) -> Path | None:
    """The folder the environment variable ``env`` names, if set; it must hold ``required``."""
    existing = os.environ.get(env)
    if not existing:
        return None
    folder = Path(existing).resolve()
    if not (folder / required).is_file():
        pytest.fail(f"{env}={existing} is not {what} (no {required})")
    return folder


def _run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``command`` in the repository; a failure fails the test with the end of its stderr."""
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that may train the quick profile get more than the suite's 900 s timeout.

    The session fixture trains inside the first such test's setup: ~3 minutes on 2 idle cores, but more
    than 10 on a busy machine.
    """
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        uses_run = "quick_run_dir" in fixtures or "real_bundle_dir" in fixtures
        if uses_run and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(QUICK_RUN_TIMEOUT_SECONDS))


@pytest.fixture(scope="session")
def quick_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the quick profile (``related``, 3,000 training messages, one epoch)."""
    existing = _given(RUN_DIR_ENV, "metrics.json", "a finished run directory")
    if existing is not None:
        return existing
    runs = tmp_path_factory.mktemp("quick-runs")
    command = [
        sys.executable,
        "-m",
        "training",
        "--config",
        str(QUICK_CONFIG),
        f"runs_dir={runs}",
        f"data.cache_dir={REPO_ROOT / 'artifacts' / 'data'}",
        "train.progress=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = _run(command, "the quick training run", env=env, timeout=QUICK_RUN_TIMEOUT_SECONDS - 60)
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert (run_dir / "metrics.json").is_file(), result.stderr[-2000:]
    return run_dir


BUNDLE_DIR_ENV = "TEXTCLF_QUALITY_BUNDLE_DIR"


@pytest.fixture(scope="session")
def real_bundle_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick run exported by the real exporter (``python -m export --no-bench``), once per session.

    Set ``TEXTCLF_QUALITY_BUNDLE_DIR`` to an existing bundle (e.g. ``models/disaster-related``) to skip the
    training and the export while iterating locally.
    """
    existing = _given(BUNDLE_DIR_ENV, "manifest.json", "a model bundle")
    if existing is not None:
        return existing
    run_dir: Path = request.getfixturevalue("quick_run_dir")  # trains only when no bundle was given
    out = tmp_path_factory.mktemp("real-bundle") / "disaster-related"
    command = [sys.executable, "-m", "export", "--run-dir", str(run_dir), "--out", str(out), "--no-bench"]
    _run(command, "exporting the quick run")
    return out
