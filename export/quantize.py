"""Step 3: int8 quantization, configured for the CPU, in four modes the exporter measures against each other.

- ``static_int8``: weights int8 per channel, activations int8 with scales fixed by calibration on held-out
  messages (ONNX Runtime's ``quantize_static``, QDQ format, min/max with a moving average over 256 messages).
  Every scale is a constant, so a text's scores do not depend on what else is in its batch. It starts from
  the O2 graph without attention fusion, so that the Q/K/V projections are MatMuls it can quantize.
- ``static_int8_ffn_weight_only``: the same, except the second feed-forward MatMul of each layer (its input
  is the GELU output, whose outliers a fixed scale clips) is 8-bit weight-only. More accurate, a little
  slower: measured on the quick bundle, label agreement with PyTorch 99.27% vs 98.24%.
- ``weight_only_int8``: ONNX Runtime's ``MatMulNBits`` with 8-bit weights (block 32, ``accuracy_level`` 4:
  activations quantized per row and block inside the kernel), so also batch-invariant.
- ``dynamic_int8``: activations quantized at run time with one scale per tensor. That tensor spans every text
  of a batch and its padding, so a text's scores move with its batch-mates (measured on the real quick bundle:
  up to 0.09 in score, 0.7-1.25% of labels flipped). Served only when asked for (``--allow-batch-variant``);
  the exporter still measures it, to say what batch invariance costs.

The integer types depend on the instruction set (``core.host.detect_isa`` reads it). With VNNI, ``vpdpbusd``
multiplies u8 x s8 into int32 exactly. Without it (AVX2, AVX-512 without VNNI), u8 x s8 products go through
``vpmaddubsw``, whose pairwise int16 sums saturate; ONNX Runtime's quantization guide offers ``reduce_range``
(7-bit weights) or u8 x u8, whose kernel widens to int16 first and cannot saturate. We take u8 x u8 there, as
optimum's avx2 preset does: with the quantizer forced to each setting (``--isa avx2``, 1,000 test messages of
the quick run), the ``static_int8_ffn_weight_only`` candidate agreed with PyTorch on 99.0% of labels with u8 x
u8 against 98.5% with u8 x s8 and reduce_range; plain ``static_int8`` failed the 98% gate with both (96.8%,
97.4%), so on such CPUs the exporter serves the FFN weight-only variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.host import Isa

QuantMode = Literal["static_int8", "static_int8_ffn_weight_only", "weight_only_int8", "dynamic_int8"]
QUANT_MODES: tuple[QuantMode, ...] = (
    "static_int8",
    "static_int8_ffn_weight_only",
    "weight_only_int8",
    "dynamic_int8",
)
BATCH_INVARIANT_MODES: frozenset[str] = frozenset(
    {"static_int8", "static_int8_ffn_weight_only", "weight_only_int8"}
)
"""Modes whose arithmetic never looks at other texts of the batch. The gate still measures it; a mode outside
this set is served only with ``--allow-batch-variant``, however small its measured drift on the gate's
texts."""
DEFAULT_QUANT_MODES: tuple[QuantMode, ...] = ("static_int8", "static_int8_ffn_weight_only", "dynamic_int8")
"""Built and measured by default. Weight-only int8 everywhere was no faster than fp32 on an AVX2 machine nor
on AVX-512 VNNI (93 vs 107 texts per CPU-second at batch 1), so it is built only when asked for."""

WEIGHT_ONLY_BLOCK_SIZE = 32
"""Block size of ``MatMulNBits``. 32 measured batch-invariant (max |Δlogit| 0.0); 128 did not (1.2e-3)."""
WEIGHT_ONLY_ACCURACY_LEVEL = 4
"""``MatMulNBits`` accuracy level 4: int8 compute, activations quantized per row and block."""


@dataclass(frozen=True)
class IsaSettings:
    """Integer types for one instruction set, and why."""

    activation_type: Literal["uint8"]
    weight_type: Literal["int8", "uint8"]
    reduce_range: bool
    reason: str


ISA_SETTINGS: dict[Isa, IsaSettings] = {
    "avx512_vnni": IsaSettings("uint8", "int8", False, "VNNI vpdpbusd: exact u8 x s8 dot products"),
    "avx512": IsaSettings(
        "uint8", "uint8", False, "no VNNI: u8 x s8 can saturate in vpmaddubsw; u8 x u8 cannot"
    ),
    "avx2": IsaSettings(
        "uint8", "uint8", False, "no VNNI: u8 x s8 can saturate in vpmaddubsw; u8 x u8 cannot"
    ),
    "arm64": IsaSettings("uint8", "int8", False, "NEON/SDOT kernels: u8 x s8 without saturation"),
}


def _quant_type(name: str) -> Any:  # onnxruntime ships no type hints: QuantType is Any to mypy
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def _annotate_shapes(path: Path) -> None:
    """Give every tensor of an O2-optimized graph a type, in place.

    The fused contrib ops (Attention, SkipLayerNormalization, BiasGelu) are unknown to ONNX shape inference,
    so the quantizer cannot type the MatMuls after them and stops. ONNX Runtime's symbolic shape inference
    knows the contrib ops.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    onnx.save(inferred, str(path))


def quantize_dynamic(model_path: Path, out_path: Path, isa: Isa, per_channel: bool = True) -> Path:
    """Dynamic int8 (one activation scale per tensor, computed at run time). Batch-variant: see module doc."""
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    settings = ISA_SETTINGS[isa]
    _annotate_shapes(model_path)
    ort_quantize_dynamic(
        str(model_path),
        str(out_path),
        per_channel=per_channel,
        reduce_range=settings.reduce_range,
        weight_type=_quant_type(settings.weight_type),
    )
    return out_path


class _CalibrationReader:
    """Feeds calibration batches to ONNX Runtime's calibrator (its ``CalibrationDataReader`` protocol)."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu"})


def ffn_output_matmuls(model_path: Path) -> list[str]:
    """Names of the MatMuls that read a GELU output (the second feed-forward projection of each layer)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[0] in producer
        and producer[node.input[0]].op_type in GELU_OPS
    ]


def quantize_static(
    model_path: Path,
    out_path: Path,
    calibration_feeds: Iterable[dict[str, np.ndarray]],
    isa: Isa,
    *,
    per_channel: bool = True,
    ffn_weight_only: bool = False,
) -> Path:
    """Static int8 (QDQ): activation scales calibrated on ``calibration_feeds``, then fixed.

    Args:
        model_path: fp32 graph (O2 without attention fusion; ONNX Runtime fuses the QDQ pairs at load time).
        out_path: Where the quantized graph is written.
        calibration_feeds: Model inputs (``input_ids``, ``attention_mask``) of held-out messages, one text
            each, so that no padding enters the ranges.
        isa: Target instruction set (picks the integer types, see ``ISA_SETTINGS``).
        per_channel: Quantize weights per output channel.
        ffn_weight_only: Leave the GELU-fed MatMuls out of static quantization and make them 8-bit
            weight-only (``MatMulNBits``) instead.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    settings = ISA_SETTINGS[isa]
    _annotate_shapes(model_path)
    excluded = ffn_output_matmuls(model_path) if ffn_weight_only else []
    static_path = out_path.with_name(f"{out_path.stem}-static.onnx")
    ort_quantize_static(
        str(model_path),
        str(static_path),
        _CalibrationReader(calibration_feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=excluded,
        per_channel=per_channel,
        reduce_range=settings.reduce_range,
        activation_type=_quant_type(settings.activation_type),
        weight_type=_quant_type(settings.weight_type),
        calibrate_method=CalibrationMethod.MinMax,
        # The average of each message's min/max instead of the extremes over all messages: one outlier
        # message no longer stretches a scale for every other (label agreement 97.75% -> 98.24%).
        extra_options={"CalibMovingAverage": True},
    )
    _weight_only_rest(static_path, out_path)
    static_path.unlink()
    return out_path


def quantize_weight_only(model_path: Path, out_path: Path) -> Path:
    """8-bit ``MatMulNBits`` for every MatMul with constant weights, plus int8 embedding tables."""
    return _weight_only_rest(model_path, out_path)


def _weight_only_rest(model_path: Path, out_path: Path) -> Path:
    """Make every MatMul that still has fp32 constant weights 8-bit weight-only, and the embeddings int8.

    MatMuls already quantized (their weights come through DequantizeLinear) and activation x activation
    MatMuls (attention scores) have no constant weight and are left alone.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=WEIGHT_ONLY_BLOCK_SIZE,
        is_symmetric=True,
        accuracy_level=WEIGHT_ONLY_ACCURACY_LEVEL,
        bits=8,
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(model_path)), algo_config=config)
    quantizer.process()
    matmuls = out_path.with_name(f"{out_path.stem}-matmuls.onnx")
    quantizer.model.save_model_to_file(str(matmuls), False)
    # The embedding tables are most of the remaining fp32 bytes; a Gather of int8 rows dequantized per row
    # reads no activation statistics, so it stays batch-invariant.
    ort_quantize_dynamic(
        str(matmuls), str(out_path), op_types_to_quantize=["Gather"], weight_type=QuantType.QInt8
    )
    matmuls.unlink()
    return out_path
