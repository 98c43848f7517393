"""The real model through the real exporter: the parity gate passes and int8 is at most 30% of fp32.

Uses ``quick_run_dir`` (tests/quality/conftest.py): a run of the quick training profile on the real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundle import MODEL_FILE, MODEL_FP32_FILE, load_bundle, verify_files
from core.engine import OnnxEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_bundle(real_bundle_dir: Path) -> Path:
    """The quick run exported once per session (tests/quality/conftest.py); the speed report is measured by
    `make export`, here only the gate and the files matter."""
    return real_bundle_dir


def test_gate_passes_on_the_full_test_split(real_bundle: Path, quick_run_dir: Path) -> None:
    parity = json.loads((real_bundle / "parity.json").read_text())
    test_lines = (quick_run_dir / "eval" / "test.jsonl").read_text().splitlines()
    assert parity["num_examples"] == len([line for line in test_lines if line.strip()])
    assert parity["passed"] is True
    assert parity["fp32"]["max_abs_logit_diff"] <= 1e-3
    assert parity["int8"]["delta_f1_points"] <= 0.5
    assert parity["int8"]["label_agreement"] >= 0.98
    manifest = load_bundle(real_bundle).manifest
    assert manifest.degraded is False


def test_int8_is_at_most_30_percent_of_fp32(real_bundle: Path) -> None:
    int8 = (real_bundle / MODEL_FILE).stat().st_size
    fp32 = (real_bundle / MODEL_FP32_FILE).stat().st_size
    assert int8 <= 0.30 * fp32


def test_served_bundle_answers_like_the_model_card_says(real_bundle: Path) -> None:
    bundle = load_bundle(real_bundle)
    verify_files(bundle)
    engine = OnnxEngine(bundle)
    flood, chatter = engine.predict(
        ["We need water and tents, the river flooded our village", "Happy birthday, see you at lunch"]
    )
    assert flood.label == "related"
    assert flood.score > chatter.scores[bundle.manifest.labels.index("related")]
