"""The one-shot trainer: fetch data, train, export a bundle, unless the bundle already exists.

It is the entry point of the training image (the compose ``trainer`` service) and the first step of the native
stack (``python -m deploy.stack``)::

    python -m deploy.trainer --config training/configs/quick.yaml --model-dir models/disaster-related

A bundle counts as present when its ``manifest.json`` exists; then nothing runs, so ``docker compose up`` a
second time starts the API at once. Delete the bundle folder (or the ``models`` volume) to retrain.

``--export-args`` (env ``TEXTCLF_EXPORT_ARGS``) passes more options to ``python -m export``, e.g.
``--no-bench`` to skip the speed report (``make compose-test`` does, to stay within its time budget).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.bundle import MANIFEST_FILE

DEFAULT_CONFIG = "training/configs/quick.yaml"
DEFAULT_MODEL_DIR = "models/disaster-related"
DEFAULT_RUN_DIR = "artifacts/runs/latest"


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline as a command line."""

    name: str
    argv: list[str]


def bundle_exists(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a bundle manifest (the exporter writes it last)."""
    return (model_dir / MANIFEST_FILE).is_file()


def pipeline_steps(
    config: str,
    model_dir: Path,
    run_dir: str,
    python: str = sys.executable,
    export_args: Sequence[str] = (),
) -> list[Step]:
    """The data -> train -> export commands, the same ones ``make data train export`` runs."""
    return [
        Step("data", [python, "-m", "training.data", "--config", config]),
        Step("train", [python, "-m", "training", "--config", config]),
        Step(
            "export",
            [python, "-m", "export", "--run-dir", run_dir, "--out", str(model_dir), "--force", *export_args],
        ),
    ]


def run_steps(steps: Sequence[Step], runner: Callable[[list[str]], int] | None = None) -> int:
    """Run each step in order; stop at the first failure and return its exit code (0 when all pass)."""
    run = runner or _run
    for step in steps:
        started = time.monotonic()
        print(f"[trainer] {step.name}: {' '.join(step.argv)}", flush=True)
        code = run(step.argv)
        if code != 0:
            print(f"[trainer] {step.name} failed with exit code {code}", file=sys.stderr, flush=True)
            return code
        print(f"[trainer] {step.name} done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def ensure_bundle(
    config: str,
    model_dir: Path,
    run_dir: str = DEFAULT_RUN_DIR,
    runner: Callable[[list[str]], int] | None = None,
    export_args: Sequence[str] = (),
) -> int:
    """Build the bundle unless it exists. Returns 0 on success or nothing to do, else the failing code."""
    if bundle_exists(model_dir):
        print(f"[trainer] bundle already present in {model_dir}: nothing to do", flush=True)
        return 0
    steps = pipeline_steps(config, model_dir, run_dir, export_args=export_args)
    code = run_steps(steps, runner)
    if code == 0 and not bundle_exists(model_dir):
        print(f"[trainer] export finished but {model_dir / MANIFEST_FILE} is missing", file=sys.stderr)
        return 1
    return code


def _run(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.trainer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.environ.get("TRAIN_CONFIG", DEFAULT_CONFIG),
        help="Training config (env TRAIN_CONFIG; default %(default)s).",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("TEXTCLF_MODEL_DIR", DEFAULT_MODEL_DIR)),
        help="Where the bundle goes (env TEXTCLF_MODEL_DIR; default %(default)s).",
    )
    parser.add_argument(
        "--run-dir", default=DEFAULT_RUN_DIR, help="Run directory the exporter reads (default %(default)s)."
    )
    parser.add_argument(
        "--export-args",
        default=os.environ.get("TEXTCLF_EXPORT_ARGS", ""),
        help="More `python -m export` options, shell-quoted, e.g. '--no-bench' (env TEXTCLF_EXPORT_ARGS).",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return ensure_bundle(args.config, args.model_dir, args.run_dir, export_args=shlex.split(args.export_args))


if __name__ == "__main__":
    sys.exit(main())
