"""torchrun data parallelism: two CPU processes (gloo) train the tiny model in step, one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_process_ddp_keeps_replicas_identical_and_writes_one_run(
    related_config: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free local port
        "--nproc_per_node=2",
        "-m",
        "training",
        "--config",
        str(related_config),
        f"runs_dir={runs}",
        "train.max_steps=4",
        "train.batch_size=4",
        "train.device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dirs = [p for p in runs.iterdir() if p.name != "latest"]
    assert len(run_dirs) == 1, run_dirs  # rank 0 alone writes
    run_dir = run_dirs[0]
    assert result.stdout.strip().splitlines() == [str(run_dir)]  # only rank 0 reports

    training = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["training"]
    assert training["world_size"] == 2
    assert training["backend"] == "gloo"
    digests = training["parameter_sha256_per_rank"]
    assert len(digests) == 2
    assert digests[0] == digests[1]  # DDP kept both replicas identical
    assert training["replicas_in_sync"] is True
    assert training["steps"] == 4
    assert training["examples_seen"] == 4 * 4 * 2  # each rank trains its own shard of the batch
    # Rank 0's log file is the only one; the other rank logged warnings only.
    assert (run_dir / "train.log").read_text(encoding="utf-8").count("run directory:") == 1
