"""Every setting is an environment variable TEXTCLF_<NAME> and a CLI flag --<name>; flag > env > default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings, SettingsError, build_parser, env_name, flag_name, parse_args

EXAMPLES = {
    "model_dir": ("models/other", Path("models/other")),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("8123", 8123),
    "ort_threads": ("2", 2),
    "max_batch_size": ("16", 16),
    "max_batch_tokens": ("2048", 2048),
    "queue_size": ("10", 10),
    "max_in_flight": ("40", 40),
    "max_wait_ms": ("2.5", 2.5),
    "request_deadline_seconds": ("1.5", 1.5),
    "max_text_chars": ("500", 500),
    "max_items": ("8", 8),
    "max_body_bytes": ("65536", 65536),
    "log_level": ("debug", "DEBUG"),
    "metrics_port": ("9100", 9100),
    "log_request_text": ("true", True),
    "cors_origins": ("https://a.example, https://b.example", ("https://a.example", "https://b.example")),
    "shutdown_timeout_seconds": ("5", 5.0),
    "workers": ("2", 2),
    "api_key": ("k-example-0123456789abcdef", "k-example-0123456789abcdef"),
    "api_key_file": ("", None),  # needs a real file: example() writes one
}
KEY_IN_FILE = "from-a-file-0123456789"


def example(name: str, tmp_path: Path) -> tuple[str, Any]:
    """``EXAMPLES[name]``, with a key file written for ``api_key_file``."""
    raw, expected = EXAMPLES[name]
    if name == "api_key_file":
        path = tmp_path / "api-key"
        path.write_text(f"{KEY_IN_FILE}\n")
        return str(path), path
    return raw, expected


def test_every_field_has_an_example_and_help() -> None:
    names = {spec.name for spec in dataclasses.fields(Settings)}
    assert names == set(EXAMPLES)
    help_text = build_parser().format_help()
    for spec in dataclasses.fields(Settings):
        assert len(spec.metadata["help"]) > 20, spec.name
        assert flag_name(spec.name) in help_text
        assert env_name(spec.name) in help_text


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_setting_reads_from_env_and_flag(name: str, tmp_path: Path) -> None:
    raw, expected = example(name, tmp_path)
    from_env = Settings.from_env({env_name(name): raw})
    assert getattr(from_env, name) == expected
    spec = next(s for s in dataclasses.fields(Settings) if s.name == name)
    argv = [flag_name(name)] if spec.type == "bool" else [flag_name(name), raw]
    from_flag = parse_args(argv, environ={})
    assert getattr(from_flag, name) == expected


def test_flag_beats_env_beats_default() -> None:
    assert Settings.from_env({}).queue_size == Settings().queue_size
    env = {"TEXTCLF_QUEUE_SIZE": "7"}
    assert parse_args([], environ=env).queue_size == 7
    assert parse_args(["--queue-size", "9"], environ=env).queue_size == 9
    assert (
        parse_args(["--no-log-request-text"], environ={"TEXTCLF_LOG_REQUEST_TEXT": "1"}).log_request_text
        is False
    )


def test_defaults_are_the_documented_ones() -> None:
    defaults = Settings()
    assert defaults.port == 8000
    assert defaults.host == "127.0.0.1"
    assert defaults.max_wait_ms == 0
    assert defaults.workers == 1
    assert defaults.cors_origins == ()
    assert defaults.log_request_text is False
    assert defaults.metrics_port == 0


@pytest.mark.parametrize(
    ("environ", "mentions"),
    [
        ({"TEXTCLF_QUEUE_SIZE": "0"}, "TEXTCLF_QUEUE_SIZE"),
        ({"TEXTCLF_PORT": "70000"}, "--port"),
        ({"TEXTCLF_MAX_BATCH_SIZE": "many"}, "TEXTCLF_MAX_BATCH_SIZE"),
        ({"TEXTCLF_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"TEXTCLF_LOG_REQUEST_TEXT": "maybe"}, "TEXTCLF_LOG_REQUEST_TEXT"),
        ({"TEXTCLF_REQUEST_DEADLINE_SECONDS": "0"}, "request_deadline_seconds"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(environ: dict[str, str], mentions: str) -> None:
    with pytest.raises(SettingsError, match=mentions):
        Settings.from_env(environ)


def test_env_round_trip_for_worker_processes() -> None:
    settings = Settings(queue_size=5, cors_origins=("https://a.example",), log_request_text=True)
    assert Settings.from_env(settings.to_env()) == settings


def test_api_key_off_by_default_and_read_from_a_file(tmp_path: Path) -> None:
    assert Settings().auth_enabled is False
    assert Settings.from_env({"TEXTCLF_API_KEY": ""}).auth_enabled is False  # compose passes an empty value
    _, path = example("api_key_file", tmp_path)
    settings = Settings.from_env({"TEXTCLF_API_KEY_FILE": str(path)})
    assert settings.api_key == KEY_IN_FILE  # surrounding whitespace (the trailing newline) is ignored
    assert settings.auth_enabled
    # Worker processes get the file, not the key, and read the same key.
    env = settings.to_env()
    assert "TEXTCLF_API_KEY" not in env
    assert Settings.from_env(env) == settings


@pytest.mark.parametrize(
    ("case", "mentions"),
    [
        ("missing file", "cannot read"),
        ("empty file", "is empty"),
        ("both", "not both"),
        ("space in key", "visible ASCII"),
        ("non-ASCII key", "visible ASCII"),
    ],
)
def test_bad_api_key_settings_refuse_to_start_without_echoing_the_key(
    tmp_path: Path, case: str, mentions: str
) -> None:
    secret = "s3cret-example-value-that-must-not-be-echoed"
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    good = tmp_path / "good"
    good.write_text(secret)
    environ = {
        "missing file": {"TEXTCLF_API_KEY_FILE": str(tmp_path / "nope")},
        "empty file": {"TEXTCLF_API_KEY_FILE": str(empty)},
        "both": {"TEXTCLF_API_KEY_FILE": str(good), "TEXTCLF_API_KEY": secret},
        "space in key": {"TEXTCLF_API_KEY": f"{secret} x"},
        "non-ASCII key": {"TEXTCLF_API_KEY": f"{secret}é"},
    }[case]
    with pytest.raises(SettingsError, match=mentions) as caught:
        Settings.from_env(environ)
    assert secret not in str(caught.value)


def test_the_key_is_not_in_the_settings_repr_nor_in_public_limits() -> None:
    settings = Settings(api_key="k-example-0123456789abcdef")
    assert "k-example-0123456789abcdef" not in repr(settings)
    assert "k-example-0123456789abcdef" not in str(settings.public())
