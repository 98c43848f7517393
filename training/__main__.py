"""Fine-tune a text classifier: ``python -m training --config FILE [--run-dir DIR] [key=value ...]``.

Commands (from the repository root)::

    make data       # = python -m training.data --config training/configs/quick.yaml
    make train      # = python -m training --config training/configs/quick.yaml
    python -m training --config training/configs/full.yaml
    python -m training --config training/configs/categories.yaml          # multi-label
    python -m training --config training/configs/kaggle_tweets.yaml data.path=/path/to/train.csv
    python -m training --config training/configs/quick.yaml train.epochs=2 model.max_length=96 tracker=wandb
    torchrun --nproc_per_node=2 -m training --config training/configs/full.yaml   # DDP, gloo on CPU
    python -m training.config --markdown                # every config option with its help text

The run directory (``artifacts/runs/<timestamp>-<name>``, linked from ``artifacts/runs/latest``) is described
in ``docs/contracts.md`` section 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from training.config import ConfigError, load_config
from training.data import DataError
from training.model import ModelError


def passive_openmp() -> None:
    """Let PyTorch's OpenMP threads sleep instead of spin at barriers (unless the caller chose otherwise).

    On a shared CPU, libgomp's default active wait turns every barrier into lost time slices. On this
    project's busy 2-core machine (load average about 12), a categories run with two passive threads and
    length-grouped batches trained at 11-15 examples/s while runs with one thread and random batches
    managed 1.4-2.1. Must be set before torch is imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune a BERT classifier and write a run directory.",
        epilog="Overrides are dotted key=value pairs parsed as YAML: train.epochs=2 data.train_subset=null.",
    )
    parser.add_argument("--config", required=True, help="YAML config, e.g. training/configs/quick.yaml")
    parser.add_argument(
        "--run-dir", type=Path, help="write the run here instead of <runs_dir>/<timestamp>-<name>"
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    passive_openmp()
    try:
        config = load_config(args.config, args.overrides)
        from training.train import run

        run_dir = run(config, args.run_dir)
    except (ConfigError, DataError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if run_dir is not None:
        print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
