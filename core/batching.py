"""Batch planning: which texts share a session run, under a cap on texts and on padded tokens.

Pure Python (no ONNX Runtime), so the service's settings can take their defaults from here without loading
the runtime. ``core.engine.OnnxEngine.predict``, the service's batcher and the export's parity gate all plan
with ``plan_batches`` and these defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_MAX_BATCH_SIZE = 32
"""Most texts in one session run: the service's ``max_batch_size`` default and ``OnnxEngine.predict``'s."""
DEFAULT_MAX_BATCH_TOKENS = 4096
"""Most padded tokens (longest text x texts) in one session run: the default of the service's
``max_batch_tokens``, of ``OnnxEngine.predict`` and of the export's parity and speed measurements."""


# Fixed cost of one session run, in padded tokens, for ``plan_batches``' length grouping. A run of the int8
# MiniLM costs ~0.3-0.8 ms plus ~23 us per padded token on 2 threads. Measured on real test messages at
# batch 32 (32 consecutive messages per call): fill-to-cap grouping 205 texts/s; grouping with a run cost of
# 16 / 32 / 64 tokens: 572-638 / 428-565 / 389-517 texts/s (three alternating runs on a busy 2-core box).
RUN_COST_TOKENS = 16


def plan_batches(
    lengths: Sequence[int],
    max_batch_size: int,
    max_batch_tokens: int,
    run_cost_tokens: int | None = None,
) -> list[list[int]]:
    """Split items into batches of similar length. Returns lists of indices into ``lengths``, shortest first.

    Items are sorted by length and cut into consecutive groups of at most ``max_batch_size`` items and
    ``max_batch_tokens`` padded tokens (longest x count).

    Args:
        lengths: Token count of each item.
        max_batch_size: Most items per batch.
        max_batch_tokens: Most padded tokens per batch; an item longer than this still gets a batch of one.
        run_cost_tokens: ``None``: fill each batch as far as the caps allow (fewest batches). A number (e.g.
            ``RUN_COST_TOKENS``): pick the grouping with the fewest padded tokens plus this much per batch,
            so one long text no longer pads 31 short ones to its length, while texts of similar length
            still share a batch.
    """
    if run_cost_tokens is None:
        return _fill_batches(lengths, max_batch_size, max_batch_tokens)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    count = len(order)
    # best[i]: cheapest cost of batching the i shortest items; start[i]: where the last batch begins.
    best = [0] * (count + 1)
    start = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]
        best_cost = -1
        for first in range(end - 1, max(0, end - max_batch_size) - 1, -1):
            size = end - first
            if size > 1 and longest * size > max_batch_tokens:
                break
            cost = best[first] + run_cost_tokens + longest * size
            if best_cost < 0 or cost <= best_cost:  # ties go to the larger batch
                best_cost, start[end] = cost, first
        best[end] = best_cost
    batches: list[list[int]] = []
    end = count
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    batches.reverse()
    return batches


def _fill_batches(lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted ascending, so the newest item is the longest: padded size = its length x count.
        if current and (
            len(current) >= max_batch_size or lengths[index] * (len(current) + 1) > max_batch_tokens
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
