"""`python -m export` on the tiny run: a failing gate, atomic writes, --force, --allow-degraded, options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.bundle import MODEL_FP32_FILE, load_bundle, verify_files
from core.engine import OnnxEngine
from core.host import ISAS, detect_isa
from export import pipeline
from export.__main__ import EXIT_BAD_RUN, EXIT_EXISTS, EXIT_GATE_FAILED, main
from export.parity import GateThresholds, gate_failures
from export.quantize import ISA_SETTINGS
from tests.support.runs import build_tiny_run_dir

# Fast settings: no speed report, only the optimized graph quantized, the tiny model's size limit relaxed.
# One candidate keeps these tests quick; the tiny model's fp32 embeddings dominate its size (see bundles.py).
FAST = ["--no-bench", "--quant-modes", "static_int8", "--max-size-ratio", "1.5", "-q"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run_dir(tmp_path_factory.mktemp("exporter") / "20260101-000000-tiny")


def _negate_logits(path: Path) -> None:
    """Degrade a model: its logits come out negated, so every top label flips."""
    model = onnx.load(str(path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        for index, name in enumerate(node.output):
            if name == output:
                node.output[index] = output + "_raw"
    model.graph.node.append(onnx.helper.make_node("Neg", [output + "_raw"], [output]))
    onnx.save(model, str(path))


def _negate_after(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """The pipeline's ``stage`` then writes a model whose logits are negated: a gate must catch it."""
    real_stage = getattr(pipeline, stage)

    def negated(*args: object, **kwargs: object) -> Path:
        path: Path = real_stage(*args, **kwargs)
        _negate_logits(path)
        return path

    monkeypatch.setattr(pipeline, stage, negated)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_gate_fails_on_a_degraded_int8_model(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _negate_after(monkeypatch, "quantize_static")
    out = tmp_path / "bundle"
    code = main(["--run-dir", str(run_dir), "--out", str(out), *FAST])
    assert code == EXIT_GATE_FAILED
    err = capsys.readouterr().err
    assert "label_agreement" in err
    assert "No bundle written" in err
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_gate_fails_when_fp32_logits_drift(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _negate_after(monkeypatch, "optimize_onnx")
    out = tmp_path / "bundle"
    assert main(["--run-dir", str(run_dir), "--out", str(out), *FAST]) == EXIT_GATE_FAILED
    assert "fp32 max_abs_logit_diff" in capsys.readouterr().err
    assert not out.exists()


def test_allow_degraded_writes_the_bundle_and_records_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _negate_after(monkeypatch, "quantize_static")
    out = tmp_path / "bundle"
    assert main(["--run-dir", str(run_dir), "--out", str(out), "--allow-degraded", *FAST]) == 0
    bundle = load_bundle(out)
    verify_files(bundle)
    assert bundle.manifest.degraded is True
    assert bundle.manifest.parity["passed"] is False
    assert any("label_agreement" in failure for failure in bundle.manifest.parity["failures"])  # type: ignore[union-attr]
    assert "--allow-degraded" in (out / "MODEL_CARD.md").read_text()


def test_refuses_to_overwrite_without_force_and_replaces_with_it(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("an older bundle")
    assert main(["--run-dir", str(run_dir), "--out", str(out), *FAST]) == EXIT_EXISTS
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "an older bundle"

    assert main(["--run-dir", str(run_dir), "--out", str(out), "--force", *FAST]) == 0
    assert not (out / "keep.txt").exists()
    verify_files(load_bundle(out))
    assert _leftovers(tmp_path) == []


def test_a_crash_mid_write_leaves_no_half_bundle_and_keeps_the_old_one(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "render_model_card", crash)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        main(["--run-dir", str(run_dir), "--out", str(fresh), *FAST])
    assert not fresh.exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError, match="disk full"):
        main(["--run-dir", str(run_dir), "--out", str(existing), "--force", *FAST])
    assert (existing / "manifest.json").read_text() == "{}"
    assert _leftovers(tmp_path) == []


def test_incomplete_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = build_tiny_run_dir(tmp_path / "run")
    (run / "eval" / "test.jsonl").unlink()
    assert main(["--run-dir", str(run), "--out", str(tmp_path / "bundle"), *FAST]) == EXIT_BAD_RUN
    assert "test.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_keeping_token_type_ids_gives_the_same_logits(run_dir: Path, tmp_path: Path) -> None:
    from export.parity import onnx_logits

    texts = ["we need water after the flood", "nice lunch today", "children trapped in the school"]
    kept = tmp_path / "kept"
    folded = tmp_path / "folded"
    assert main(["--run-dir", str(run_dir), "--out", str(kept), "--keep-token-type-ids", *FAST]) == 0
    assert main(["--run-dir", str(run_dir), "--out", str(folded), *FAST]) == 0
    kept_bundle, folded_bundle = load_bundle(kept), load_bundle(folded)
    assert "token_type_ids" in kept_bundle.manifest.inputs
    assert "token_type_ids" not in folded_bundle.manifest.inputs
    np.testing.assert_allclose(
        onnx_logits(OnnxEngine(kept_bundle, 1, model_file=MODEL_FP32_FILE), texts),
        onnx_logits(OnnxEngine(folded_bundle, 1, model_file=MODEL_FP32_FILE), texts),
        atol=1e-5,
    )


def test_every_mode_is_measured_and_a_batch_invariant_one_is_served(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    modes = "static_int8,static_int8_ffn_weight_only,weight_only_int8,dynamic_int8"
    args = ["--run-dir", str(run_dir), "--out", str(out), "--no-bench", "--max-size-ratio", "1.5", "-q"]
    assert main([*args, "--quant-modes", modes]) == 0
    parity = json.loads((out / "parity.json").read_text())
    assert set(parity["candidates"]) == {
        "static_int8/optimized_unfused_attention",
        "static_int8_ffn_weight_only/optimized_unfused_attention",
        "weight_only_int8/exported",
        "dynamic_int8/optimized",
    }
    assert parity["candidates"]["dynamic_int8/optimized"]["eligible"] is False
    for report in parity["candidates"].values():
        assert report["batch_invariance"]["comparisons"] == 3 * parity["num_examples"]
        assert report["batch1_texts_per_second"] > 0
        assert report["batch32_texts_per_second"] > 0
    chosen = parity["candidates"][parity["int8_candidate"]]
    assert chosen["eligible"] is True
    assert chosen["batch_invariance"]["invariant"] is True
    quantization = load_bundle(out).manifest.quantization
    assert f"{quantization.mode}/{quantization.source_graph}" == parity["int8_candidate"]
    assert quantization.batch_invariant is True
    assert not (out / "bench.json").exists()


def test_a_batch_variant_candidate_fails_the_gate_unless_allowed() -> None:
    fp32 = {"max_abs_logit_diff": 1e-6}
    int8 = {"delta_f1_points": 0.0, "label_agreement": 1.0, "f1_pytorch": 0.9, "f1_int8": 0.9}
    variant = {"max_abs_score_diff": 0.09, "label_flips": 13}
    failures = gate_failures(fp32, int8, size_ratio=0.25, limits=GateThresholds(), invariance=variant)
    assert len(failures) == 1
    assert "batch invariance" in failures[0]
    assert "13 label flips" in failures[0]
    # --allow-batch-variant: the exporter does not pass the invariance figures to the gate.
    assert gate_failures(fp32, int8, size_ratio=0.25, limits=GateThresholds()) == []
    rounding = {"max_abs_score_diff": 6e-8, "label_flips": 0}
    assert gate_failures(fp32, int8, size_ratio=0.25, limits=GateThresholds(), invariance=rounding) == []


def test_batch_invariance_catches_a_model_that_reads_its_batch_mates(tiny_bundle_dir: Path) -> None:
    from export.parity import batch_invariance

    engine = OnnxEngine(load_bundle(tiny_bundle_dir), 1)
    texts = ["we need water after the flood", "nice lunch today", "children trapped in the school"] * 4
    assert batch_invariance(engine, texts, multi_label=False)["invariant"] is True

    real_infer = engine.infer

    def batch_dependent(batch: list[object]) -> np.ndarray:
        scores = real_infer(batch)  # type: ignore[arg-type]
        return scores + 1e-3 * (len(batch) > 1)

    engine.infer = batch_dependent  # type: ignore[method-assign]
    figures = batch_invariance(engine, texts, multi_label=False)
    assert figures["invariant"] is False
    assert figures["max_abs_score_diff"] >= 1e-3


def test_size_limit_is_part_of_the_gate(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny model's embeddings dominate its size, so the 30% limit fails it.
    out = tmp_path / "bundle"
    args = ["--run-dir", str(run_dir), "--out", str(out), "--no-bench", "--quant-modes", "static_int8", "-q"]
    assert main(args) == EXIT_GATE_FAILED
    assert "size_ratio" in capsys.readouterr().err
    assert not out.exists()


def test_gate_failures_name_each_figure() -> None:
    limits = GateThresholds()
    fp32 = {"max_abs_logit_diff": 2e-3}
    int8 = {"delta_f1_points": 0.6, "label_agreement": 0.97, "f1_pytorch": 0.9, "f1_int8": 0.894}
    failures = gate_failures(fp32, int8, size_ratio=0.31, limits=limits)
    assert len(failures) == 4
    joined = " ".join(failures)
    for figure in ("max_abs_logit_diff", "delta_f1_points", "label_agreement", "size_ratio"):
        assert figure in joined
    ok = gate_failures(
        {"max_abs_logit_diff": 1e-3},
        {"delta_f1_points": 0.5, "label_agreement": 0.98, "f1_pytorch": 0.9, "f1_int8": 0.895},
        size_ratio=0.3,
        limits=limits,
    )
    assert ok == []


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ("fpu sse avx2 avx512f avx512bw avx512_vnni", "x86_64", "avx512_vnni"),
        ("fpu sse avx2 avx512f avx512bw", "x86_64", "avx512"),
        ("fpu sse avx avx2 fma", "x86_64", "avx2"),
        ("fp asimd", "aarch64", "arm64"),
    ],
)
def test_detect_isa(flags: str, machine: str, expected: str) -> None:
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert detect_isa(cpuinfo, machine) == expected


def test_cpus_without_vnni_get_integer_types_that_cannot_saturate() -> None:
    # u8 x s8 goes through vpmaddubsw without VNNI, whose int16 pair sums saturate; u8 x u8 widens first.
    assert ISA_SETTINGS["avx512_vnni"].weight_type == "int8"
    assert ISA_SETTINGS["avx2"].weight_type == "uint8"
    assert ISA_SETTINGS["avx512"].weight_type == "uint8"
    assert set(ISA_SETTINGS) == set(ISAS)


def test_run_dir_thresholds_may_be_a_list_or_a_mapping(tmp_path: Path) -> None:
    from core.run_dir import RunDirError, load_run_dir

    run = build_tiny_run_dir(tmp_path / "run", multi_label=True)
    assert load_run_dir(run).thresholds == [0.5, 0.5, 0.5, 0.5]
    data = json.loads((run / "data.json").read_text())
    data["thresholds"] = {"request": 0.3, "water": 0.4, "food": 0.5, "shelter": 0.6}
    (run / "data.json").write_text(json.dumps(data))
    assert load_run_dir(run).thresholds == [0.3, 0.4, 0.5, 0.6]
    data["thresholds"] = [0.5, 0.5]
    (run / "data.json").write_text(json.dumps(data))
    with pytest.raises(RunDirError, match="one per label"):
        load_run_dir(run)
