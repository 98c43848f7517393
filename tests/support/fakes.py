"""A bundle and an engine for service tests that need no ONNX model: a real tokenizer, a fake model.

``FakeEngine`` implements the ``Engine`` Protocol with scores that depend only on each text's own token ids
(so batching cannot change them), and can be held on a gate to keep the batcher busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from core.bundle import (
    MODEL_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    Bundle,
    Manifest,
    Quantization,
    checksum_files,
    write_manifest,
)
from core.engine import Engine, OnnxEngine, Prediction, Tokenized, sigmoid, softmax
from core.engine import TextTooLongError as EngineTextTooLongError
from service.settings import Settings
from tests.support.tiny_model import vocabulary

SINGLE_LABELS = ["not_related", "related"]
MULTI_LABELS = ["request", "water", "food", "shelter"]


def build_tokenizer(path: Path) -> Path:
    """A BERT-style WordPiece tokenizer over the tiny vocabulary, written as tokenizer.json."""
    vocab = {token: index for index, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(path))
    return path


def build_fake_bundle(folder: Path, multi_label: bool = False, max_length: int = 32) -> Path:
    """A bundle folder with a real tokenizer, a placeholder model file and a checksummed manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder / TOKENIZER_FILE)
    (folder / MODEL_FILE).write_bytes(b"placeholder: the fake engine does not read it")
    labels = MULTI_LABELS if multi_label else SINGLE_LABELS
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name="fake-multi" if multi_label else "fake-related",
        version="test-1",
        base_model="tiny",
        task="categories" if multi_label else "related",
        problem_type="multi_label" if multi_label else "single_label",
        labels=labels,
        thresholds=[0.5] * len(labels) if multi_label else None,
        max_length=max_length,
        inputs=["input_ids", "attention_mask"],
        quantization=Quantization(mode="none"),
        opset=17,
        versions={"onnxruntime": "fake"},
        files=checksum_files(folder),
        label_prior={label: 1 / len(labels) for label in labels},
        created_at="2026-01-01T00:00:00Z",
    )
    write_manifest(folder, manifest)
    return folder


class FakeEngine:
    """Engine Protocol with a real tokenizer and deterministic per-text scores; ``gate`` holds ``infer``."""

    def __init__(self, bundle: Bundle, gate: threading.Event | None = None) -> None:
        self._manifest = bundle.manifest
        self.max_length = bundle.manifest.max_length
        self.labels = tuple(bundle.manifest.labels)
        self.multi_label = bundle.manifest.problem_type == "multi_label"
        self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        self.gate = gate
        self.entered = threading.Event()
        self.batches: list[int] = []

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> list[Tokenized]:
        result = []
        for index, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            ids = encoding.ids
            truncated = len(ids) > self.max_length
            if truncated and not truncate:
                raise EngineTextTooLongError(index, len(ids), self.max_length)
            kept = [*ids[: self.max_length - 1], ids[-1]] if truncated else ids
            result.append(Tokenized(np.asarray(kept, dtype=np.int64), len(ids), truncated))
        return result

    def infer(self, batch: Sequence[Tokenized]) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        self.batches.append(len(batch))
        logits = np.zeros((len(batch), len(self.labels)), dtype=np.float32)
        for row, item in enumerate(batch):
            ids = item.ids.astype(np.float64)
            for column in range(len(self.labels)):
                logits[row, column] = np.sin(ids.sum() * 0.37 * (column + 1)) * 2 + 0.1 * item.length
        return sigmoid(logits) if self.multi_label else softmax(logits)

    def postprocess(self, scores: np.ndarray) -> list[Prediction]:
        predictions = []
        for row in scores:
            top = int(row.argmax())
            chosen = (
                tuple(self.labels[i] for i in np.flatnonzero(row >= 0.5))
                if self.multi_label
                else (self.labels[top],)
            )
            predictions.append(Prediction(self.labels[top], float(row[top]), row, chosen))
        return predictions


class GatedEngine:
    """Wraps a real engine; ``infer`` waits for ``gate`` (keeps the batcher busy in backpressure tests)."""

    def __init__(self, inner: Engine, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.entered = threading.Event()

    @property
    def manifest(self) -> Manifest:
        return self.inner.manifest

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> list[Tokenized]:
        return self.inner.tokenize(texts, truncate)

    def infer(self, batch: Sequence[Tokenized]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.inner.infer(batch)

    def postprocess(self, scores: np.ndarray) -> list[Prediction]:
        return self.inner.postprocess(scores)


def gated_factory(gate: threading.Event, engines: list[GatedEngine]) -> Callable[[Bundle, Settings], Engine]:
    """An engine factory for ``create_app`` that wraps each real engine in a ``GatedEngine`` on ``gate`` and
    records it in ``engines``."""

    def factory(bundle: Bundle, settings: Settings) -> Engine:
        engine = GatedEngine(OnnxEngine(bundle), gate)
        engines.append(engine)
        return engine

    return factory
