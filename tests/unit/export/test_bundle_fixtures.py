"""Bundles the exporter writes from the tiny run: every file, checksums, manifest fields, served answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.bundle import (
    BENCH_FILE,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    MODEL_FP32_FILE,
    PARITY_FILE,
    TOKENIZER_FILE,
    BundleError,
    load_bundle,
    sha256_file,
    verify_files,
)
from core.engine import OnnxEngine

TEXTS = [
    "we need water and food after the flood in the village",
    "nice lunch today",
    "people trapped in the collapsed school please send help",
    "happy birthday my love",
    "storm damage in the city, families need tents",
]


def test_bundle_has_every_contract_file_with_its_checksum(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    verify_files(bundle)
    expected = {MODEL_FILE, MODEL_FP32_FILE, TOKENIZER_FILE, PARITY_FILE, BENCH_FILE, MODEL_CARD_FILE}
    expected.add("bench.png")
    assert expected <= set(bundle.manifest.files)
    for name, digest in bundle.manifest.files.items():
        assert sha256_file(tiny_bundle_dir / name) == digest
    assert MANIFEST_FILE not in bundle.manifest.files
    # No staging or backup folders left beside the bundle.
    assert [p.name for p in tiny_bundle_dir.parent.iterdir() if p.name.startswith(".")] == []


def test_manifest_describes_the_run(tiny_bundle_dir: Path) -> None:
    manifest = load_bundle(tiny_bundle_dir).manifest
    run_dir = tiny_bundle_dir.parent / "run"
    data = json.loads((run_dir / "data.json").read_text())
    assert manifest.labels == ["not_related", "related"]
    assert manifest.problem_type == "single_label"
    assert manifest.thresholds is None
    assert manifest.max_length == 64
    assert manifest.task == "related"
    assert manifest.version == "run"
    assert manifest.label_prior == data["label_prior"]
    assert manifest.training_metrics == json.loads((run_dir / "metrics.json").read_text())
    assert manifest.quantization.mode in {"static_int8", "static_int8_ffn_weight_only"}
    assert manifest.quantization.batch_invariant is True
    assert manifest.quantization.isa in {"avx512_vnni", "avx512", "avx2", "arm64"}
    assert manifest.opset >= 14
    assert set(manifest.versions) >= {"onnxruntime", "optimum", "transformers", "torch"}
    assert manifest.parity["passed"] is True
    assert manifest.degraded is False
    assert manifest.created_at.endswith("+00:00")
    # token type ids are folded into the word embeddings: the served graph takes two inputs.
    assert manifest.inputs == ["input_ids", "attention_mask"]


def test_parity_and_bench_reports_are_written(tiny_bundle_dir: Path) -> None:
    parity = json.loads((tiny_bundle_dir / PARITY_FILE).read_text())
    assert parity["num_examples"] == 48
    assert parity["fp32"]["max_abs_logit_diff"] <= 1e-3
    assert parity["int8"]["label_agreement"] >= 0.98
    assert parity["int8_candidate"] in parity["candidates"]
    bench = json.loads((tiny_bundle_dir / BENCH_FILE).read_text())
    assert set(bench["results"]) == {"1", "32"}
    for by_system in bench["results"].values():
        assert set(by_system) == {
            "pytorch_eager_fp32",
            "onnx_fp32_optimized",
            "onnx_int8",
            "onnx_int8_pad_to_longest",
            # The dynamic int8 candidate the gate measured but did not serve: what invariance costs.
            "onnx_int8_dynamic_batch_variant",
        }
        assert all(figures["texts_per_second"] > 0 for figures in by_system.values())
    assert (tiny_bundle_dir / "bench.png").read_bytes()[:4] == b"\x89PNG"
    card = (tiny_bundle_dir / MODEL_CARD_FILE).read_text()
    assert "## Intended use" in card
    assert "## Known limits" in card


def test_tampered_model_is_rejected_by_the_service_reader(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle_dir, tmp_path / "bundle")
    model = copy / MODEL_FILE
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    bundle = load_bundle(copy)  # the manifest itself is fine
    with pytest.raises(BundleError, match="SHA-256 mismatch") as info:
        verify_files(bundle)
    assert info.value.field == f"files.{MODEL_FILE}"


def test_missing_tokenizer_is_rejected(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle_dir, tmp_path / "bundle")
    (copy / TOKENIZER_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)


def test_onnx_logits_match_pytorch_on_a_handful_of_texts(tiny_bundle_dir: Path) -> None:
    from export.parity import onnx_logits, torch_logits

    bundle = load_bundle(tiny_bundle_dir)
    model_dir = tiny_bundle_dir.parent / "run" / "model"
    reference = torch_logits(model_dir, TEXTS, max_length=64)
    fp32 = onnx_logits(OnnxEngine(bundle, 1, model_file=MODEL_FP32_FILE), TEXTS)
    int8 = onnx_logits(OnnxEngine(bundle, 1), TEXTS)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    assert np.abs(int8 - reference).max() < 0.05
    assert not np.allclose(int8, fp32, atol=1e-7)  # the int8 graph really is a different model


def test_int8_model_is_quantized_and_smaller(tiny_bundle_dir: Path) -> None:
    import onnx

    graph = onnx.load(str(tiny_bundle_dir / MODEL_FILE)).graph
    op_types = {node.op_type for node in graph.node}
    # Static int8 (QDQ) or weight-only (MatMulNBits): both batch-invariant; see export/quantize.py.
    assert op_types & {"QuantizeLinear", "DequantizeLinear", "MatMulNBits"}
    assert (tiny_bundle_dir / MODEL_FILE).stat().st_size < (tiny_bundle_dir / MODEL_FP32_FILE).stat().st_size


def test_multilabel_bundle_has_thresholds_and_sigmoid_scores(tiny_multilabel_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_multilabel_bundle_dir)
    verify_files(bundle)
    manifest = bundle.manifest
    assert manifest.problem_type == "multi_label"
    assert manifest.labels == ["request", "water", "food", "shelter"]
    assert manifest.thresholds == [0.5, 0.5, 0.5, 0.5]
    engine = OnnxEngine(bundle, 1)
    scores = engine.infer(engine.tokenize(TEXTS[:1]))
    assert scores.shape == (1, 4)
    assert ((scores > 0) & (scores < 1)).all()
    assert not np.isclose(scores.sum(), 1.0)  # independent sigmoids, not a softmax
    prediction = engine.predict(TEXTS[:1])[0]
    assert set(prediction.labels) == {
        label for label, score in zip(manifest.labels, scores[0], strict=True) if score >= 0.5
    }
