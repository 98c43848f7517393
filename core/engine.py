"""The inference engine: tokenizer + ONNX Runtime session for one bundle, with no HTTP in it.

The service's batcher, the exporter's parity gate and speed report, and the load test's in-process figures
all run this module, with the batch caps of ``core.batching``, so what is measured is what is served. The hot
path is: ``tokenize`` (fast Rust tokenizer, batch encoding, no padding) -> ``plan_batches`` (group by length,
cap by count and padded tokens) -> ``infer`` (pad to the longest text in the batch, run the session, softmax
or sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from core.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, RUN_COST_TOKENS, plan_batches
from core.bundle import Bundle, Manifest
from core.host import usable_cores


class TextTooLongError(ValueError):
    """A text has more tokens than the model accepts and the caller asked not to truncate."""

    def __init__(self, index: int, num_tokens: int, max_length: int) -> None:
        self.index = index
        self.num_tokens = num_tokens
        self.max_length = max_length
        super().__init__(
            f"text {index} has {num_tokens} tokens; the model accepts at most {max_length} "
            "(send truncate=true to cut it)"
        )


@dataclass(frozen=True, slots=True)
class Tokenized:
    """One text after tokenization: the ids the model sees and what was cut."""

    ids: np.ndarray
    """int64 token ids, special tokens included, at most ``max_length`` long."""
    num_tokens: int
    """Tokens before truncation (special tokens included)."""
    truncated: bool

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's answer for one text."""

    label: str
    """Top label (single-label), or the highest-scoring label (multi-label)."""
    score: float
    """Score of ``label``: softmax probability or sigmoid."""
    scores: np.ndarray
    """float32 scores for every label, in manifest order."""
    labels: tuple[str, ...]
    """Multi-label: every label over its threshold. Single-label: ``(label,)``."""


class Engine(Protocol):
    """What the service needs from a model runtime (a fake implements it in tests)."""

    @property
    def manifest(self) -> Manifest: ...

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> list[Tokenized]: ...

    def infer(self, batch: Sequence[Tokenized]) -> np.ndarray: ...

    def postprocess(self, scores: np.ndarray) -> list[Prediction]: ...


def session_options(intra_op_threads: int | None = None, allow_spinning: bool = False) -> ort.SessionOptions:
    """Explicit ONNX Runtime options: the defaults size thread pools to the host, not the container.

    Args:
        intra_op_threads: Threads inside one operator (matmuls). ``None`` means every available core.
        allow_spinning: Let idle pool threads spin. Spinning trims microseconds off each run but burns a core
            between batches that the event loop and tokenizer need on a small machine.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


# ONNX Runtime 1.32's CPU SkipLayerNormalization kernel measured 5-7x slower than Add + LayerNormalization;
# keeping them apart made the int8 MiniLM 28% faster at batch 1 (see export/optimize.py).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def sigmoid(logits: np.ndarray) -> np.ndarray:
    probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
    return probabilities


class OnnxEngine:
    """Runs one bundle's ONNX model on CPU. ``infer`` is thread-safe (ONNX Runtime's ``run`` is)."""

    def __init__(
        self,
        bundle: Bundle,
        intra_op_threads: int | None = None,
        allow_spinning: bool = False,
        model_file: str | None = None,
    ) -> None:
        self.bundle = bundle
        manifest = bundle.manifest
        self._manifest = manifest
        self.max_length = manifest.max_length
        self._labels = tuple(manifest.labels)
        self._thresholds = (
            np.asarray(manifest.thresholds, dtype=np.float32) if manifest.thresholds is not None else None
        )
        self._multi_label = manifest.problem_type == "multi_label"
        self._pad_id = manifest.pad_token_id

        self._tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # A second instance that truncates the way training did, used only for over-long texts.
        self._truncating = Tokenizer.from_file(str(bundle.tokenizer_path))
        self._truncating.no_padding()
        self._truncating.enable_truncation(self.max_length, direction=manifest.truncation_side)

        model_path = bundle.file(model_file) if model_file else bundle.model_path
        self.session = ort.InferenceSession(
            str(model_path),
            sess_options=session_options(intra_op_threads, allow_spinning),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._needs_token_types = "token_type_ids" in self._input_names
        self._output_names = [manifest.output]

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> list[Tokenized]:
        """Encode texts without padding. Over-long texts are cut to ``max_length`` when ``truncate``.

        Raises:
            TextTooLongError: a text is over ``max_length`` tokens and ``truncate`` is false.
        """
        # encode_batch_fast skips character offsets (unused here): ~3x less time per text at batch 32.
        encodings = self._tokenizer.encode_batch_fast(list(texts))
        result: list[Tokenized] = []
        for index, encoding in enumerate(encodings):
            ids = encoding.ids
            num_tokens = len(ids)
            truncated = num_tokens > self.max_length
            if truncated:
                if not truncate:
                    raise TextTooLongError(index, num_tokens, self.max_length)
                ids = self._truncating.encode(texts[index]).ids
            result.append(Tokenized(np.asarray(ids, dtype=np.int64), num_tokens, truncated))
        return result

    def infer(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """Run one batch, padded to its longest text. Returns float32 scores ``[len(batch), labels]``."""
        logits = self.logits(batch)
        return sigmoid(logits) if self._multi_label else softmax(logits)

    def logits(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """Raw model outputs for one batch, padded to its longest text: float32 ``[len(batch), labels]``."""
        if not batch:
            return np.zeros((0, len(self._labels)), dtype=np.float32)
        if len(batch) == 1:
            # No padding for a single text: its ids are the input as they are.
            input_ids = batch[0].ids.reshape(1, -1)
            attention_mask = np.ones_like(input_ids)
        else:
            longest = max(item.length for item in batch)
            input_ids = np.full((len(batch), longest), self._pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, item in enumerate(batch):
                input_ids[row, : item.length] = item.ids
                attention_mask[row, : item.length] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._needs_token_types:
            # Bundles exported with --keep-token-type-ids; the default export folds them into the graph.
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (logits,) = self.session.run(self._output_names, feeds)
        return np.asarray(logits, dtype=np.float32)

    def postprocess(self, scores: np.ndarray) -> list[Prediction]:
        """Turn score rows into predictions (top label, thresholds for multi-label)."""
        predictions: list[Prediction] = []
        for row in scores:
            top = int(row.argmax())
            if self._multi_label:
                assert self._thresholds is not None
                chosen = tuple(self._labels[i] for i in np.flatnonzero(row >= self._thresholds))
            else:
                chosen = (self._labels[top],)
            predictions.append(Prediction(self._labels[top], float(row[top]), row, chosen))
        return predictions

    def predict(
        self,
        texts: Sequence[str],
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        run_cost_tokens: int | None = RUN_COST_TOKENS,
    ) -> list[Prediction]:
        """Classify texts in input order (tokenize, group by length, infer, postprocess)."""
        tokenized = self.tokenize(texts)
        scores = np.zeros((len(texts), len(self._labels)), dtype=np.float32)
        lengths = [t.length for t in tokenized]
        for batch in plan_batches(lengths, max_batch_size, max_batch_tokens, run_cost_tokens):
            scores[batch] = self.infer([tokenized[i] for i in batch])
        return self.postprocess(scores)
