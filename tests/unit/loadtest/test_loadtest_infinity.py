"""The Infinity comparison's pieces: the folder it serves, how it is started, reading its answers, and the
check that it serves our graph the way we do (offline; the server itself runs in ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import infinity
from tests.support import REPO_ROOT


def checkpoint(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"id2label": {"0": "not_related", "1": "related"}}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 512, "do_lower_case": true}')
    (folder / "vocab.txt").write_text("[PAD]\n")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_model_folder_holds_our_graph_under_the_name_infinity_picks(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"int8 graph")
    out = infinity.prepare_model_dir(checkpoint(tmp_path / "ckpt"), graph, tmp_path / "served", max_length=64)
    assert (out / "model_quantized.onnx").read_bytes() == b"int8 graph"
    # One graph only (a second .onnx would make Infinity's choice depend on glob order), no PyTorch weights.
    assert [p.name for p in out.glob("*.onnx")] == ["model_quantized.onnx"]
    assert not (out / "model.safetensors").exists()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config == {"model_max_length": 64, "do_lower_case": True}
    # Rebuilt from scratch each run: a graph left by an earlier bundle cannot be served by mistake.
    (out / "stale.onnx").write_bytes(b"old")
    infinity.prepare_model_dir(tmp_path / "ckpt", graph, out, max_length=64)
    assert not (out / "stale.onnx").exists()


def test_model_folder_needs_the_checkpoint_config_and_tokenizer(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"g")
    with pytest.raises(infinity.InfinityError, match=r"config\.json, tokenizer\.json"):
        infinity.prepare_model_dir(empty, graph, tmp_path / "served", max_length=64)


def test_server_is_started_on_a_relative_model_id_without_graph_rewrites(tmp_path: Path) -> None:
    env = infinity.InfinityEnv(tmp_path / "venv", "2.13.0+cpu", None, ())
    command = infinity.server_command(env, 7997)
    assert command[0] == str(tmp_path / "venv" / "bin" / "infinity_emb")
    pairs = dict(zip(command[2::2], command[3::2], strict=False))
    assert command[command.index("--model-id") + 1] == "."  # an absolute path fails optimum's file match
    assert pairs.get("--engine") == "optimum"
    assert "--onnx-disable-optimize" in command
    assert command[command.index("--device") + 1] == "cpu"
    assert command[command.index("--host") + 1] == "127.0.0.1"


def test_server_env_is_offline_and_carries_the_key_outside_the_command_line() -> None:
    env = infinity.server_env("k3y")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["INFINITY_API_KEY"] == "k3y"
    assert "INFINITY_API_KEY" not in infinity.server_env(None)


def test_top_label_reads_an_infinity_answer() -> None:
    body = {
        "object": "classify",
        "data": [[{"score": 0.2, "label": "not_related"}, {"score": 0.8, "label": "related"}]],
        "model": "textclf",
    }
    assert infinity.top_label(body) == ("related", 0.8)
    assert "not one list" in str(infinity.top_label({"data": []}))
    assert "not a JSON object" in str(infinity.top_label(None))
    assert "lacks label" in str(infinity.top_label({"data": [[{"score": 0.3}]]}))


def test_agreement_reports_label_flips_and_the_largest_score_gap() -> None:
    pairs = [
        (("related", 0.90), ("related", 0.90000004)),
        (("related", 0.60), ("related", 0.61)),
        (("related", 0.51), ("not_related", 0.52)),
        (("not_related", 0.70), ("not_related", 0.70)),
    ]
    result = infinity.agreement(pairs)
    assert result["messages"] == 4
    assert result["label_agreement"] == pytest.approx(0.75)
    assert result["max_abs_score_diff"] == pytest.approx(0.01)


def test_cuda_packages_are_recognised() -> None:
    names = ["torch", "nvidia_cublas_cu12", "triton", "numpy", "cuda-bindings"]
    assert infinity.cuda_packages(names) == ("cuda-bindings", "nvidia-cublas-cu12", "triton")
    assert infinity.cuda_packages(["torch", "onnxruntime"]) == ()


def test_constraints_pin_everything_and_keep_the_cpu_torch() -> None:
    pins = {}
    for line in infinity.CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name] = version
    assert pins["infinity-emb"] == infinity.INFINITY_VERSION
    assert pins["torch"] == "2.13.0"
    assert pins["numpy"].startswith("1.")  # Infinity 0.0.78 needs numpy<2
    assert all(pins.values()), "every line is an exact pin"
    assert not infinity.cuda_packages(list(pins))
    # Same ONNX Runtime stack as the service, so the comparison measures serving, not kernels.
    ours = dict(
        line.split("==", 1)
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in ("onnxruntime", "optimum", "transformers", "tokenizers"):
        assert pins[name] == ours[name], name
