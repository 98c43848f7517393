"""Step 3: dynamic int8 quantization with optimum's ``ORTQuantizer``, configured for the CPU.

Dynamic quantization stores weights as int8 and quantizes activations at run time, so it needs no
calibration data. The right ``AutoQuantizationConfig`` depends on the instruction set: VNNI has a fast
u8 x s8 dot product; plain AVX2/AVX-512 without VNNI can overflow in u8 x s8, which is why optimum's
avx2/avx512 configs use u8 x u8.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Isa = Literal["avx512_vnni", "avx512", "avx2", "arm64"]
ISAS: tuple[Isa, ...] = ("avx512_vnni", "avx512", "avx2", "arm64")


def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> Isa:
    """The best quantization target this CPU supports.

    Args:
        cpuinfo: Contents of ``/proc/cpuinfo`` (read when ``None``); a parameter so tests can pass other CPUs.
        machine: ``platform.machine()`` (read when ``None``).
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" not in flags:
        log.warning("no AVX2 found in /proc/cpuinfo; using the avx2 quantization config anyway")
    return "avx2"


def quantization_config(isa: Isa, per_channel: bool = True) -> Any:
    """optimum's dynamic ``AutoQuantizationConfig`` for ``isa``."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}; choose one of {', '.join(ISAS)}")
    factory = getattr(AutoQuantizationConfig, isa)
    return factory(is_static=False, per_channel=per_channel)


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


def quantize_dynamic(model_path: Path, out_dir: Path, isa: Isa, per_channel: bool = True) -> Path:
    """Quantize ``model_path`` (inside a folder optimum wrote, with ``config.json``) into ``out_dir``."""
    from optimum.onnxruntime import ORTQuantizer

    _annotate_shapes(model_path)
    quantizer = ORTQuantizer.from_pretrained(model_path.parent, file_name=model_path.name)
    quantizer.quantize(quantization_config(isa, per_channel), save_dir=out_dir, file_suffix="quantized")
    path = out_dir / f"{model_path.stem}_quantized.onnx"
    if not path.is_file():  # pragma: no cover - optimum changed its naming
        raise FileNotFoundError(f"ORTQuantizer did not write {path}")
    return path
