"""Step 1: PyTorch checkpoint -> ONNX with optimum, plus folding away ``token_type_ids``.

The service encodes one text at a time (never sentence pairs), so every token type id is 0 and the token-type
embedding contributes the same row to every position. Adding that row to the word-embedding table once, at
export, removes an input, a Gather and an Add from the graph and an array from every request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

TOKEN_TYPE_INPUT = "token_type_ids"


def export_onnx(model_dir: Path, out_dir: Path) -> Path:
    """Export a sequence-classification checkpoint with optimum; returns the path of ``model.onnx``.

    optimum writes ``config.json`` beside the model, which ``ORTOptimizer``/``ORTQuantizer`` read later.
    """
    from optimum.onnxruntime import ORTModelForSequenceClassification

    model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    model.save_pretrained(out_dir)
    path = out_dir / "model.onnx"
    if not path.is_file():  # pragma: no cover - optimum changed its file name
        raise FileNotFoundError(f"optimum did not write {path}")
    return path


def graph_inputs(path: Path) -> list[str]:
    """Names of a model's graph inputs, in order."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def opset(path: Path) -> int:
    """The default-domain ONNX opset of a model."""
    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def fold_token_type_ids(path: Path) -> bool:
    """Fold token type 0 into the word embeddings and drop the ``token_type_ids`` input, in place.

    Matches BERT's embedding pattern ``Add(Gather(word_emb, input_ids), Gather(type_emb, token_type_ids))``.
    Returns False (model untouched) when the pattern is not there or the tables are shared elsewhere.
    """
    model = onnx.load(str(path))
    graph = model.graph
    if TOKEN_TYPE_INPUT not in {i.name for i in graph.input}:
        return False
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}

    type_gathers = consumers.get(TOKEN_TYPE_INPUT, [])
    if len(type_gathers) != 1 or type_gathers[0].op_type != "Gather":
        return False
    type_gather = type_gathers[0]
    type_table_name, _ = type_gather.input
    add_nodes = consumers.get(type_gather.output[0], [])
    if type_table_name not in initializers or len(add_nodes) != 1 or add_nodes[0].op_type != "Add":
        return False
    add = add_nodes[0]
    word_out = next(name for name in add.input if name != type_gather.output[0])
    word_gather = next((n for n in graph.node if word_out in n.output), None)
    if word_gather is None or word_gather.op_type != "Gather" or word_gather.input[1] != "input_ids":
        return False
    word_table_name = word_gather.input[0]
    if word_table_name not in initializers or len(consumers.get(word_table_name, [])) != 1:
        return False
    if len(consumers.get(type_table_name, [])) != 1:
        return False

    word_table = numpy_helper.to_array(initializers[word_table_name])
    type_row = numpy_helper.to_array(initializers[type_table_name])[0]
    folded = (word_table + type_row[np.newaxis, :]).astype(word_table.dtype)
    initializers[word_table_name].CopyFrom(numpy_helper.from_array(folded, word_table_name))

    # Everything that read the Add's output now reads the word-embedding Gather directly.
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == add.output[0]:
                node.input[position] = word_out
    graph.node.remove(add)
    graph.node.remove(type_gather)
    graph.initializer.remove(initializers[type_table_name])
    token_input = next(i for i in graph.input if i.name == TOKEN_TYPE_INPUT)
    graph.input.remove(token_input)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    log.info("folded token_type_ids into the word embeddings (input dropped)")
    return True
