"""Step 2: graph optimization with optimum's ``ORTOptimizer`` at the portable O2 level.

O2 fuses attention, LayerNorm (SkipLayerNormalization) and GELU (BiasGelu) for CPU; O3 adds approximate GELU
and O4 fp16, which are GPU choices.
"""

from __future__ import annotations

from pathlib import Path

OPTIMIZATION_LEVEL = "O2"


def optimize_onnx(onnx_dir: Path, out_dir: Path, file_name: str = "model.onnx") -> Path:
    """Optimize ``onnx_dir/file_name`` (a folder optimum wrote) into ``out_dir``; returns the new path."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    optimizer = ORTOptimizer.from_pretrained(onnx_dir, file_names=[file_name])
    optimizer.optimize(AutoOptimizationConfig.O2(for_gpu=False), save_dir=out_dir, file_suffix="optimized")
    path = out_dir / f"{Path(file_name).stem}_optimized.onnx"
    if not path.is_file():  # pragma: no cover - optimum changed its naming
        raise FileNotFoundError(f"ORTOptimizer did not write {path}")
    return path
