"""Config loading: the shipped YAML files, dotted overrides, validation errors that name file and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from training.config import (
    DEFAULT_BASE_MODEL,
    Config,
    ConfigError,
    iter_options,
    load_config,
    options_markdown,
)

CONFIGS = REPO_ROOT / "training" / "configs"


@pytest.mark.parametrize("name", ["quick", "full", "categories", "kaggle_tweets"])
def test_shipped_configs_load_and_name_the_run_after_the_file(name: str) -> None:
    overrides = ["data.path=/data/train.csv"] if name == "kaggle_tweets" else []
    config = load_config(CONFIGS / f"{name}.yaml", overrides)
    assert config.name == name
    assert config.model.base == DEFAULT_BASE_MODEL


def test_quick_profile_matches_the_sized_reference() -> None:
    config = load_config(CONFIGS / "quick.yaml")
    assert (config.task.name, config.task.problem_type) == ("related", "single_label")
    assert config.data.train_subset == 3000
    assert (config.train.epochs, config.model.max_length, config.train.batch_size) == (1, 64, 32)
    assert config.data.label_map == {"0": "not_related", "1": "related"}
    assert config.data.drop_label_values == ["2"]


def test_categories_profile_is_multi_label() -> None:
    config = load_config(CONFIGS / "categories.yaml")
    assert (config.task.name, config.task.problem_type) == ("categories", "multi_label")


def test_overrides_are_parsed_as_yaml_and_reach_nested_fields() -> None:
    config = load_config(
        CONFIGS / "quick.yaml",
        [
            "train.epochs=2",
            "train.learning_rate=3e-5",
            "data.train_subset=null",
            "train.deterministic=false",
            "model.base=/some/checkpoint",
            "name=my-run",
        ],
    )
    assert config.train.epochs == 2
    assert config.train.learning_rate == pytest.approx(3e-5)
    assert config.data.train_subset is None
    assert config.train.deterministic is False
    assert config.model.base == "/some/checkpoint"
    assert config.name == "my-run"


def test_list_and_mapping_overrides(tmp_path: Path) -> None:
    config = load_config(
        CONFIGS / "kaggle_tweets.yaml",
        [
            f"data.path={tmp_path / 'train.csv'}",
            "data.extra_text_columns=[keyword, location]",
            "data.text_template='{keyword} {location} {text}'",
            "data.label_map={0: calm, 1: disaster}",
        ],
    )
    assert config.data.extra_text_columns == ["keyword", "location"]
    assert config.data.label_map == {"0": "calm", "1": "disaster"}  # integer YAML keys compare as text


def test_the_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "quick.yaml", ["train.epochs=3"])
    saved = tmp_path / "config.yaml"
    saved.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(saved) == config


def test_unknown_field_names_the_file_and_suggests_the_right_one(write_config: Callable[..., Path]) -> None:
    path = write_config(train={"learning_rat": 1e-4})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "train.learning_rat" in message
    assert "learning_rate" in message


def test_unknown_override_names_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"overrides: field 'train.epoch'.*did you mean 'epochs'"):
        load_config(CONFIGS / "quick.yaml", ["train.epoch=2"])


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ("train.epochs=two", "train.epochs", "must be an integer"),
        ("train.epochs=0", "train.epochs", "at least 1"),
        ("train.learning_rate=-1", "train.learning_rate", "positive"),
        ("train.deterministic=maybe", "train.deterministic", "true or false"),
        ("tracker=mlflow", "tracker", "must be one of"),
        ("task.problem_type=multi_label", "task.problem_type", "related' is single_label"),
        ("task.name=sentiment", "task.name", "built-in dataset has tasks"),
        ("data.test_size=1.5", "data.test_size", "strictly between 0 and 1"),
        (
            "data.extra_text_columns=[keyword]",
            "data.extra_text_columns",
            "do not appear in data.text_template",
        ),
        ("data.text_template='{keyword}: {text}'", "data.text_template", "not in data.extra_text_columns"),
        ("data.text_template=hello", "data.text_template", "must contain {text}"),
        ("data.labels=[a, a]", "data.labels", "duplicates"),
        ("data.label_map={0: calm, 1: storm}", "data.label_map", "not in data.labels"),
        ("train=3", "train", "must be a mapping"),
    ],
)
def test_invalid_values_name_the_field(override: str, field: str, reason: str) -> None:
    extra = ["data.labels=[not_related, related]"] if field == "data.label_map" else []
    with pytest.raises(ConfigError) as error:
        load_config(CONFIGS / "quick.yaml", [*extra, override])
    assert error.value.field_path == field
    assert reason in error.value.reason
    assert "quick.yaml" in str(error.value)


def test_file_source_requires_a_path() -> None:
    with pytest.raises(ConfigError, match=r"field 'data.path': is required"):
        load_config(CONFIGS / "kaggle_tweets.yaml")


def test_missing_and_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listed)


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS / "quick.yaml", ["train.epochs"])


def test_builtin_related_task_has_its_label_defaults_without_a_file() -> None:
    config = load_config(None, [])
    assert config.data.label_column == "related"
    assert config.data.label_map == {"0": "not_related", "1": "related"}
    assert config.data.drop_label_values == ["2"]


def test_every_option_has_help_text_and_appears_in_the_markdown_table() -> None:
    options = list(iter_options())
    assert len(options) > 30
    table = options_markdown()
    for name, _, _, help_text in options:
        assert help_text, f"{name} has no help text"
        assert f"`{name}`" in table
    assert isinstance(Config().train.seed, int)


def test_training_doc_lists_the_current_options() -> None:
    """docs/training.md's option table is generated from the field docstrings: regenerate it on a change."""
    doc = (CONFIGS.parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    assert options_markdown() in doc, "regenerate the table: make docs"
