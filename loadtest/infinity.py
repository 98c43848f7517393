"""Infinity, the closest published peer, as a second comparison target for ``make bench``.

Infinity (``infinity-emb`` on PyPI) is a Python inference server with dynamic batching, an ONNX Runtime
backend (through optimum) and a ``POST /classify`` endpoint. The benchmark serves it **our own int8 graph**
so the comparison measures the serving stack, not the model:

1. **Its own venv** (``artifacts/infinity/venv`` by default): Infinity 0.0.78 needs numpy<2, which .venv
   cannot take. It is created on first use with the exact pins of ``loadtest/infinity-constraints.txt`` (the
   same onnxruntime, optimum, transformers and tokenizers as constraints.txt) and checked to hold the CPU
   build of torch: ``torch==2.13.0`` resolves to a multi-GB CUDA build where no local CPU wheel is offered,
   so when a dry run shows NVIDIA packages, torch is first installed from the PyTorch CPU index
   (``TORCH_INDEX_URL``, as in ``training/Dockerfile``).
2. **A model folder** (``<bench out>/infinity-model``): the training checkpoint's ``config.json`` (labels) and
   tokenizer files, and the bundle's ``model.onnx`` copied as ``model_quantized.onnx``: the name Infinity's
   optimum engine picks on CPU.
3. **The server**, started *inside* that folder with ``--model-id .``: optimum matches the ONNX file by a
   relative name, so an absolute model path fails. ``--onnx-disable-optimize`` keeps the graph as exported
   (Infinity's own optimizer would otherwise rewrite it), ``--engine optimum --device cpu``, and
   ``--no-model-warmup`` (see ``server_command``). Everything else is Infinity's default (batch size 32).

The bundle's graph has ``token_type_ids`` folded away (the input is dropped). optimum's
``ORTModelForSequenceClassification`` feeds a session only the inputs the graph declares, so the tokenizer's
``token_type_ids`` (all zeros for one sentence, which is what the folding assumes) are simply not passed.
``agreement`` checks that claim on every run: the same messages, one at a time, to both servers, must get the
same labels and scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INFINITY_VERSION = "0.0.78"
REQUIREMENT = f"infinity-emb[server,optimum,torch]=={INFINITY_VERSION}"
CONSTRAINTS = Path(__file__).with_name("infinity-constraints.txt")
DEFAULT_VENV = Path("artifacts/infinity/venv")
SERVED_MODEL_NAME = "textclf"
# Infinity's optimum engine prefers a file with "quantize" in its name on CPU; a second .onnx in the folder
# would make the choice depend on glob order.
ONNX_NAME = "model_quantized.onnx"
DEFAULT_TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# Checkpoint files Infinity needs besides the graph: the config (id2label) and the tokenizer.
CHECKPOINT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
INSTALLED_MARKER = ".textclf-constraints.sha256"
CUDA_PACKAGE_PREFIXES = ("nvidia-", "triton", "cuda-")


class InfinityError(RuntimeError):
    """The Infinity venv or model folder cannot be made; the message says what to do."""


@dataclass(frozen=True)
class InfinityEnv:
    """A ready venv: where it is and what it runs on (recorded in the bench results)."""

    venv: Path
    torch_version: str
    torch_cuda: str | None
    cuda_packages: tuple[str, ...]

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "infinity_emb"

    def describe(self) -> dict[str, Any]:
        return {
            "venv": str(self.venv),
            "infinity_emb": INFINITY_VERSION,
            "torch": self.torch_version,
            "torch_cuda": self.torch_cuda,
            "cuda_packages": list(self.cuda_packages),
            "constraints": str(CONSTRAINTS),
        }


def constraints_digest() -> str:
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()


def cuda_packages(names: Sequence[str]) -> tuple[str, ...]:
    """The distribution names that belong to a CUDA build of torch (``nvidia-*``, ``triton``, ``cuda-*``)."""
    normalized = (name.lower().replace("_", "-") for name in names)
    return tuple(sorted(name for name in normalized if name.startswith(CUDA_PACKAGE_PREFIXES)))


def _pip(venv: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(venv / "bin" / "python"), "-m", "pip", *args]
    completed = subprocess.run(command, capture_output=capture, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or "")[-2000:] if capture else ""
        raise InfinityError(f"{' '.join(command)} failed (exit {completed.returncode}) {detail}")
    return completed


def _torch_would_pull_cuda(venv: Path) -> tuple[str, ...]:
    """Resolve ``torch==2.13.0`` without installing it: the CUDA packages pip would bring in, if any."""
    completed = _pip(venv, "install", "--dry-run", "--quiet", "--report", "-", "torch==2.13.0", capture=True)
    report = json.loads(completed.stdout)
    return cuda_packages([item["metadata"]["name"] for item in report.get("install", [])])


def _installed(venv: Path) -> list[str]:
    completed = _pip(venv, "list", "--format=json", capture=True)
    return [item["name"] for item in json.loads(completed.stdout)]


def _torch_build(venv: Path) -> tuple[str, str | None]:
    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    completed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise InfinityError(f"torch does not import in {venv}: {completed.stderr[-1000:]}")
    version, cuda = json.loads(completed.stdout)
    return version, cuda


def ensure_venv(venv: Path = DEFAULT_VENV, torch_index_url: str | None = None) -> InfinityEnv:
    """Create (once) and check the Infinity venv; reinstall when ``infinity-constraints.txt`` changed.

    Raises:
        InfinityError: pip failed, or the venv ended up with a CUDA build of torch.
    """
    # Absolute: the server runs with the model folder as its working directory.
    venv = venv.resolve()
    marker = venv / INSTALLED_MARKER
    digest = constraints_digest()
    executable = venv / "bin" / "infinity_emb"
    if not (executable.is_file() and marker.is_file() and marker.read_text().strip() == digest):
        print(f"bench: installing Infinity {INFINITY_VERSION} into {venv} (first run only; a few minutes)")
        if not (venv / "bin" / "python").is_file():
            # The base interpreter of .venv, so the new venv does not inherit .venv's packages.
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        if "torch" not in {name.lower() for name in _installed(venv)} and (
            pulled := _torch_would_pull_cuda(venv)
        ):
            index = torch_index_url or os.environ.get("TORCH_INDEX_URL") or DEFAULT_TORCH_INDEX_URL
            print(f"bench: torch==2.13.0 would bring {len(pulled)} CUDA packages here; using {index}")
            _pip(venv, "install", "--quiet", "--index-url", index, "torch==2.13.0")
        _pip(venv, "install", "--quiet", "--constraint", str(CONSTRAINTS), REQUIREMENT)
        marker.write_text(digest + "\n")
    torch_version, torch_cuda = _torch_build(venv)
    found = cuda_packages(_installed(venv))
    if torch_cuda is not None or found:
        raise InfinityError(
            f"{venv} has a CUDA build of torch ({torch_version}, CUDA {torch_cuda}, {', '.join(found)}); "
            f"delete it and set TORCH_INDEX_URL to a CPU wheel index"
        )
    return InfinityEnv(venv, torch_version, torch_cuda, found)


def prepare_model_dir(checkpoint: Path, onnx_model: Path, out: Path, max_length: int) -> Path:
    """The folder Infinity serves: the checkpoint's config and tokenizer, our graph renamed for Infinity.

    ``model_max_length`` in the tokenizer config is set to the bundle's ``max_length``, so both servers know
    the same limit (Infinity's classification pipeline does not truncate; ``messages_over_limit`` in the
    results counts the messages this affects).

    Raises:
        InfinityError: the checkpoint lacks its config or tokenizer.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)
    missing = [name for name in ("config.json", "tokenizer.json") if not (out / name).is_file()]
    if missing:
        raise InfinityError(f"{checkpoint}: no {', '.join(missing)} for Infinity's model folder")
    shutil.copy2(onnx_model, out / ONNX_NAME)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["model_max_length"] = max_length
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def server_command(env: InfinityEnv, port: int) -> list[str]:
    """``infinity_emb v2`` on our graph; run it with the model folder as the working directory."""
    return [
        str(env.executable),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--engine",
        "optimum",
        "--onnx-disable-optimize",
        "--device",
        "cpu",
        # Its warm-up classifies "warm " x 512 (514 tokens with [CLS]/[SEP]) without truncating, past BERT's
        # 512 positions, and the server exits. The bench warms every server up with real messages instead;
        # Infinity 0.0.78 only logs the warm-up timings (its batch delay is a constant).
        "--no-model-warmup",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def server_env(api_key: str | None) -> dict[str, str]:
    """Offline, no telemetry; the same API key as ours (in the environment, not on ``ps``) when one is set."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    env["INFINITY_ANONYMOUS_USAGE_STATS"] = "0"
    if api_key:
        env["INFINITY_API_KEY"] = api_key
    return env


def request_body(text: str) -> dict[str, Any]:
    """One message per request, like ours: ``{"input": [text], "model": ...}``."""
    return {"input": [text], "model": SERVED_MODEL_NAME}


def top_label(body: Any) -> tuple[str, float] | str:
    """The best label and its score from an Infinity ``/classify`` answer for one text, or what is wrong."""
    if not isinstance(body, Mapping):
        return "body is not a JSON object"
    data = body.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], list) or not data[0]:
        return "'data' is not one list of label scores"
    best: tuple[str, float] | None = None
    for entry in data[0]:
        if not isinstance(entry, Mapping):
            return "a 'data' entry is not an object"
        label, score = entry.get("label"), entry.get("score")
        if not isinstance(label, str) or not isinstance(score, int | float):
            return "a 'data' entry lacks label or score"
        if best is None or score > best[1]:
            best = (label, float(score))
    assert best is not None
    return best


def agreement(pairs: Sequence[tuple[tuple[str, float], tuple[str, float]]]) -> dict[str, Any]:
    """Label agreement and the largest score gap between ours and Infinity on the same messages.

    Args:
        pairs: ((our label, our score), (Infinity's label, its score)) per message.
    """
    same = [ours[0] == theirs[0] for ours, theirs in pairs]
    gaps = [abs(ours[1] - theirs[1]) for ours, theirs in pairs if ours[0] == theirs[0]]
    return {
        "messages": len(pairs),
        "label_agreement": sum(same) / len(pairs) if pairs else float("nan"),
        "max_abs_score_diff": max(gaps) if gaps else float("nan"),
    }
