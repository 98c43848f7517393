"""Export a training run to a parity-gated int8 ONNX bundle.

    python -m export --run-dir artifacts/runs/latest --out models/disaster-related
    python -m export --run-dir artifacts/runs/latest --out models/disaster-related --force
    python -m export --run-dir RUN --out OUT --isa avx2 --parity-sample 500 --no-bench
    python -m export --run-dir RUN --out OUT --allow-degraded     # keep a bundle that failed the gate
    python -m export --run-dir RUN --out OUT --allow-batch-variant  # let dynamic int8 win if it is fastest
    python -m export --run-dir RUN --out OUT --quant-modes static_int8 --no-bench   # one candidate only

``make export`` runs the first form (with ``--force``) on the latest run. Exit codes: 0 written, 2 parity gate
failed (nothing written; the failed figures are printed), 3 the output exists (use ``--force``), 4 the run
directory is incomplete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.host import ISAS
from core.run_dir import RunDirError
from export.parity import GateFailedError, GateThresholds
from export.pipeline import SOURCE_GRAPHS, BundleExistsError, ExportOptions, export_bundle
from export.quantize import DEFAULT_QUANT_MODES, QUANT_MODES

EXIT_GATE_FAILED = 2
EXIT_EXISTS = 3
EXIT_BAD_RUN = 4


def passive_openmp() -> None:
    """Make PyTorch's OpenMP threads sleep instead of spin while waiting (unless the caller chose otherwise).

    With libgomp's default active wait, other processes on the machine turn every barrier into a lost time
    slice: measured here, PyTorch at 2 threads fell to 4.6 texts/s at batch 1 on a busy 2-core box, against
    48.5 with ``OMP_WAIT_POLICY=PASSIVE`` and 61 with one thread. Passive is the fair PyTorch baseline for the
    speed report and makes the parity gate's PyTorch pass faster. It must be set before torch is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv: Sequence[str] | None = None) -> ExportOptions:
    defaults = GateThresholds()
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="training run directory")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--name", help="model name in the manifest (default: the --out folder name)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument(
        "--allow-degraded", action="store_true", help="write the bundle even if the gate fails (recorded)"
    )
    parser.add_argument("--isa", choices=ISAS, help="int8 target instruction set (default: detected)")
    parser.add_argument("--no-per-channel", action="store_true", help="quantize weights per tensor")
    parser.add_argument(
        "--skip-layer-norm-fusion",
        action="store_true",
        help="keep O2's SkipLayerNormalization fusion (measured slower on CPU; off by default)",
    )
    parser.add_argument(
        "--keep-token-type-ids", action="store_true", help="keep the token_type_ids input (no folding)"
    )
    parser.add_argument(
        "--quant-modes",
        default=",".join(DEFAULT_QUANT_MODES),
        help=f"int8 candidates to build and measure, comma-separated, of {','.join(QUANT_MODES)} (default: "
        f"{','.join(DEFAULT_QUANT_MODES)}); the fastest one that passes the gate is served",
    )
    parser.add_argument(
        "--allow-batch-variant",
        action="store_true",
        help="let dynamic_int8 be served if fastest: a text's scores then depend on its batch-mates",
    )
    parser.add_argument(
        "--source-graphs",
        default="optimized",
        help="fp32 graphs dynamic_int8 quantizes, comma-separated: optimized,exported (default optimized)",
    )
    parser.add_argument("--parity-sample", type=int, help="compare on the first N test messages only")
    parser.add_argument("--max-logit-diff", type=float, default=defaults.max_abs_logit_diff)
    parser.add_argument("--max-delta-f1", type=float, default=defaults.max_delta_f1_points, help="F1 points")
    parser.add_argument("--min-agreement", type=float, default=defaults.min_label_agreement)
    parser.add_argument("--max-size-ratio", type=float, default=defaults.max_size_ratio)
    parser.add_argument("--threads", type=int, help="threads for every benchmarked system (default: cores)")
    parser.add_argument("--no-bench", action="store_true", help="skip the speed report")
    parser.add_argument("--bench-rounds", type=int, default=5, help="alternation rounds of the speed report")
    parser.add_argument("--bench-texts", type=int, default=256, help="distinct test messages benchmarked")
    parser.add_argument(
        "--allow-spinning", action="store_true", help="ONNX Runtime thread spinning in the measured engines"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    sources = tuple(s.strip() for s in args.source_graphs.split(",") if s.strip())
    unknown = [s for s in sources if s not in SOURCE_GRAPHS]
    if not sources or unknown:
        parser.error(f"--source-graphs takes {', '.join(SOURCE_GRAPHS)}; got {args.source_graphs!r}")
    modes = tuple(m.strip() for m in args.quant_modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in QUANT_MODES]
    if not modes or unknown:
        parser.error(f"--quant-modes takes {', '.join(QUANT_MODES)}; got {args.quant_modes!r}")
    # Our progress lines at INFO; the libraries (the ORT quantizer logs one line per tensor) at WARNING.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("export").setLevel(logging.WARNING if args.quiet else logging.INFO)
    return ExportOptions(
        run_dir=args.run_dir,
        out=args.out,
        name=args.name,
        force=args.force,
        allow_degraded=args.allow_degraded,
        isa=args.isa,
        per_channel=not args.no_per_channel,
        skip_layer_norm_fusion=args.skip_layer_norm_fusion,
        fold_token_types=not args.keep_token_type_ids,
        source_graphs=sources,
        quant_modes=modes,  # checked against QUANT_MODES above
        allow_batch_variant=args.allow_batch_variant,
        parity_sample=args.parity_sample,
        limits=GateThresholds(
            max_abs_logit_diff=args.max_logit_diff,
            max_delta_f1_points=args.max_delta_f1,
            min_label_agreement=args.min_agreement,
            max_size_ratio=args.max_size_ratio,
        ),
        threads=args.threads,
        bench=not args.no_bench,
        bench_rounds=args.bench_rounds,
        bench_texts=args.bench_texts,
        allow_spinning=args.allow_spinning,
    )


def main(argv: Sequence[str] | None = None) -> int:
    passive_openmp()
    options = parse_args(argv)
    try:
        out = export_bundle(options)
    except GateFailedError as exc:
        print(f"error: {exc}. No bundle written to {options.out}.", file=sys.stderr)
        print(json.dumps(exc.report, indent=2, default=str), file=sys.stderr)
        return EXIT_GATE_FAILED
    except BundleExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_EXISTS
    except RunDirError as exc:
        print(f"error: run directory: {exc}", file=sys.stderr)
        return EXIT_BAD_RUN
    print(f"bundle written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
