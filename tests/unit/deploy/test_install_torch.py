"""`.ci/install-torch.sh` (`make install` step 2): the CPU build of torch, from the PyTorch CPU index or, when
that is unreachable, from pip's own configuration only if that offers a CPU build.

pip is replaced by a stand-in module on PYTHONPATH that records its arguments and plays one scenario; the
script's own checks (installed torch metadata, the dry-run report) run for real on what the stand-in writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "install-torch.sh"
INDEX = "https://download.pytorch.org/whl/cpu"

FAKE_PIP = r"""
import json, os, sys
from pathlib import Path
site = Path(os.environ["FAKE_SITE"])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
def install(version, cuda):
    info = site / f"torch-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    requires = "Requires-Dist: nvidia-cublas-cu12==12.8\n" if cuda else ""
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n{requires}")
if "--index-url" in args:
    if os.environ["FAKE_INDEX"] == "down":
        sys.exit(1)
    install("2.13.0+cpu", cuda=False)
elif "--dry-run" in args:
    cuda = os.environ["FAKE_CONFIGURED"] == "cuda"
    items = [{"metadata": {"name": "torch", "version": "2.13.0" if cuda else "2.13.0+cpu"}}]
    if cuda:
        items.append({"metadata": {"name": "nvidia-cublas-cu12", "version": "12.8"}})
    Path(args[args.index("--report") + 1]).write_text(json.dumps({"install": items}))
else:
    install("2.13.0" if os.environ["FAKE_CONFIGURED"] == "cuda" else "2.13.0+cpu",
            cuda=os.environ["FAKE_CONFIGURED"] == "cuda")
"""


def run_script(
    tmp_path: Path, index: str, configured: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    site = tmp_path / "site"
    (site / "pip").mkdir(parents=True, exist_ok=True)
    (site / "pip" / "__init__.py").write_text("", encoding="utf-8")
    (site / "pip" / "__main__.py").write_text(FAKE_PIP, encoding="utf-8")
    log = tmp_path / "pip-calls.jsonl"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
        "FAKE_SITE": str(site),
        "FAKE_LOG": str(log),
        "FAKE_INDEX": index,
        "FAKE_CONFIGURED": configured,
    }
    # -S: no site-packages, so the only torch the script can see is the one the stand-in pip "installs".
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    result = subprocess.run(
        ["bash", str(SCRIPT), str(python), "2.13.0", INDEX],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_cpu_index_reachable_installs_from_it(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, index="up", configured="cuda")
    assert result.returncode == 0, result.stderr
    assert calls == [
        ["install", "--quiet", "--retries", "1", "--timeout", "30", "--index-url", INDEX, "torch==2.13.0"]
    ]
    assert "torch 2.13.0+cpu (CPU-only)" in result.stdout


def test_unreachable_index_falls_back_to_a_configured_cpu_wheel(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, index="down", configured="cpu")
    assert result.returncode == 0, result.stderr
    index_try, dry_run, install = calls
    assert "--index-url" in index_try
    assert "--dry-run" in dry_run
    assert install == ["install", "--quiet", "torch==2.13.0"]
    assert "offer a CPU build (torch 2.13.0+cpu)" in result.stdout


def test_unreachable_index_refuses_the_cuda_build(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, index="down", configured="cuda")
    assert result.returncode == 1
    assert "CUDA build" in result.stderr
    assert "TORCH_INDEX_URL" in result.stderr
    assert not [c for c in calls if "--dry-run" not in c and "--index-url" not in c], "nothing was installed"


def test_installed_cpu_torch_means_no_pip_call(tmp_path: Path) -> None:
    first, _ = run_script(tmp_path, index="up", configured="cpu")
    assert first.returncode == 0
    (tmp_path / "pip-calls.jsonl").unlink()
    again, calls = run_script(tmp_path, index="down", configured="cuda")
    assert again.returncode == 0, again.stderr
    assert calls == []
    assert "already installed" in again.stdout


def test_makefile_installs_torch_first_from_an_overridable_cpu_index() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu" in makefile
    torch_step = makefile.index("bash .ci/install-torch.sh $(PY) $(TORCH_VERSION) $(TORCH_INDEX_URL)")
    assert torch_step < makefile.index('-e ".[$(EXTRAS)]"')
    pinned = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "-", "show"],
        input=makefile.split("\n.PHONY: help")[0] + "\nshow:\n\t@echo $(TORCH_VERSION)\n",
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert pinned.stdout.strip() == "2.13.0", pinned.stderr
