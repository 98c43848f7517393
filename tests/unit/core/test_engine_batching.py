"""``core.batching`` and ``core.engine``: length grouping (``plan_batches``) and the batch paths the speed
report measures."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, RUN_COST_TOKENS, plan_batches
from core.bundle import MODEL_FP32_FILE, load_bundle
from core.engine import OnnxEngine


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=200), max_size=120),
    max_batch_size=st.integers(min_value=1, max_value=40),
    max_batch_tokens=st.integers(min_value=1, max_value=4096),
    run_cost_tokens=st.one_of(st.none(), st.integers(min_value=0, max_value=64)),
)
@settings(max_examples=300, deadline=None)
def test_every_item_lands_in_exactly_one_batch_within_the_caps(
    lengths: list[int], max_batch_size: int, max_batch_tokens: int, run_cost_tokens: int | None
) -> None:
    batches = plan_batches(lengths, max_batch_size, max_batch_tokens, run_cost_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_batch_size
        if len(batch) > 1:
            assert max(lengths[i] for i in batch) * len(batch) <= max_batch_tokens


def test_one_long_text_does_not_pad_the_short_ones() -> None:
    lengths = [12] * 31 + [120]
    filled = plan_batches(lengths, 32, 16384)
    grouped = plan_batches(lengths, 32, 16384, RUN_COST_TOKENS)
    assert len(filled) == 1  # everything padded to 120 tokens: 3,840 padded tokens
    assert sorted(map(sorted, grouped)) == [list(range(31)), [31]]  # 31 x 12 + 120 = 492


def test_equal_lengths_still_share_one_batch() -> None:
    assert plan_batches([20] * 32, 32, 16384, RUN_COST_TOKENS) == [list(range(32))]
    assert [len(b) for b in plan_batches([20] * 40, 32, 16384, RUN_COST_TOKENS)] == [8, 32]


def test_predict_matches_one_text_at_a_time(tiny_bundle_dir: Path) -> None:
    """Grouping, padding and reordering do not change answers (fp32: padding is masked out exactly)."""
    bundle = load_bundle(tiny_bundle_dir)
    texts = ["flood", "we need water and food after the storm in the city please help", "nice lunch", "tents"]
    fp32 = OnnxEngine(bundle, 1, model_file=MODEL_FP32_FILE)
    together = np.stack([p.scores for p in fp32.predict(texts)])
    alone = np.stack([fp32.predict([text])[0].scores for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    # int8 quantizes activations per batch, so batch mates shift scores slightly, never by much.
    int8 = OnnxEngine(bundle, 1)
    together = np.stack([p.scores for p in int8.predict(texts)])
    alone = np.stack([int8.predict([text])[0].scores for text in texts])
    np.testing.assert_allclose(together, alone, atol=2e-3)


def test_truncation_cuts_to_max_length(tiny_bundle_dir: Path) -> None:
    engine = OnnxEngine(load_bundle(tiny_bundle_dir), 1)
    long_text = " ".join(["flood"] * 200)
    (item,) = engine.tokenize([long_text])
    assert item.truncated
    assert item.length == engine.max_length
    assert item.num_tokens == 202
    assert engine.predict([long_text])[0].scores.shape == (2,)


def test_served_and_measured_batches_share_one_default() -> None:
    """The speed report and the parity gate measure batches capped as the service caps them by default."""
    from export.parity import onnx_logits
    from service.settings import Settings

    served = Settings()
    predict = inspect.signature(OnnxEngine.predict).parameters
    parity = inspect.signature(onnx_logits).parameters
    assert served.max_batch_tokens == DEFAULT_MAX_BATCH_TOKENS
    assert predict["max_batch_tokens"].default == DEFAULT_MAX_BATCH_TOKENS
    assert parity["max_batch_tokens"].default == DEFAULT_MAX_BATCH_TOKENS
    assert served.max_batch_size == predict["max_batch_size"].default == parity["batch_size"].default
    assert served.max_batch_size == DEFAULT_MAX_BATCH_SIZE
