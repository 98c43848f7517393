"""Service settings: every field is an environment variable ``TEXTCLF_<NAME>`` and a CLI flag ``--<name>``.

Precedence: CLI flag > environment variable > default. ``Settings.from_env()`` reads only the environment (the
app factory uses it when given nothing); ``parse_args`` adds the flags (``python -m service``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS

ENV_PREFIX = "TEXTCLF_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting has a value the service cannot run with (names the env var / flag)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service can be told at start-up. Field docstrings are the ``--help`` texts."""

    model_dir: Path = field(
        default=Path("models/disaster-related"),
        metadata=_help(
            "Model bundle folder (manifest.json, model.onnx, tokenizer.json) written by `make export`."
        ),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=_help("Interface to listen on. 127.0.0.1 keeps it local; use 0.0.0.0 in a container."),
    )
    port: int = field(default=8000, metadata=_help("TCP port for the API."))
    ort_threads: int = field(
        default=0,
        metadata=_help(
            "ONNX Runtime intra-op threads per process. 0 = every core this process may use (right for one "
            "worker); with several workers give each cores/workers so pools do not oversubscribe the CPU."
        ),
    )
    max_batch_size: int = field(
        default=DEFAULT_MAX_BATCH_SIZE,
        metadata=_help("Most texts the batcher runs in one ONNX Runtime call."),
    )
    max_batch_tokens: int = field(
        default=DEFAULT_MAX_BATCH_TOKENS,
        metadata=_help(
            "Most padded tokens (longest text x texts) in one batch; caps the memory and latency of a batch "
            "of long texts. A single text longer than this still runs, alone."
        ),
    )
    queue_size: int = field(
        default=256,
        metadata=_help(
            "Most requests admitted and not yet answered (waiting or in the running batch). When full, new "
            "requests get 429 with Retry-After at once: refusing is cheaper for everyone than waiting."
        ),
    )
    max_in_flight: int = field(
        default=0,
        metadata=_help(
            "Most POST /classify requests handled at once, admitted or not (body being read, decoded, "
            "queued or running). Over it a request gets the JSON 429 (overloaded) before its body is read, "
            "so a flood cannot pile up in the event loop. 0 = 2 x queue_size."
        ),
    )
    max_wait_ms: float = field(
        default=0.0,
        metadata=_help(
            "Extra time the batcher waits for more texts before running a batch that is not full. 0 = run at "
            "once when idle (best latency); a few ms may raise throughput a little under heavy load."
        ),
    )
    request_deadline_seconds: float = field(
        default=10.0,
        metadata=_help(
            "A request not answered within this time after it arrived (before its body is read) gets 503 "
            "(deadline_exceeded); texts still queued past it are dropped rather than computed for nobody."
        ),
    )
    max_text_chars: int = field(
        default=10_000, metadata=_help("Longest text accepted, in characters (400 above it).")
    )
    max_items: int = field(
        default=64, metadata=_help("Most texts in one request's `texts` list (400 above it).")
    )
    max_body_bytes: int = field(
        default=1_000_000, metadata=_help("Largest request body in bytes; larger bodies get 413.")
    )
    log_level: str = field(default="INFO", metadata=_help("Log level: DEBUG, INFO, WARNING or ERROR."))
    metrics_port: int = field(
        default=0,
        metadata=_help(
            "Serve /metrics on this separate port (same host) instead of the API port; 0 = on the API port."
        ),
    )
    log_request_text: bool = field(
        default=False,
        metadata=_help(
            "Debugging only: include request texts in the per-request log line. Off by default because "
            "messages can hold personal data."
        ),
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Comma-separated origins allowed to call the API from a browser (CORS). Empty (default) = CORS "
            "off; the built-in page is same-origin and needs none."
        ),
    )
    shutdown_timeout_seconds: float = field(
        default=30.0,
        metadata=_help(
            "On SIGTERM: stop accepting, then give admitted requests this long to finish before exiting."
        ),
    )
    api_key: str = field(
        default="",
        repr=False,
        metadata=_help(
            "Require `Authorization: Bearer <key>` on POST /classify and /info (health probes, /metrics, the "
            "page and /schema stay open). Empty (default) = no key. Prefer --api-key-file: a flag shows in "
            "`ps`. Visible ASCII only, no spaces; e.g. `openssl rand -hex 32`."
        ),
    )
    api_key_file: Path | None = field(
        default=None,
        metadata=_help(
            "Read the API key from this file (a Docker or Kubernetes secret); surrounding whitespace is "
            "ignored. The service refuses to start when the file is missing or empty, rather than run open."
        ),
    )
    workers: int = field(
        default=1,
        metadata=_help(
            "Server processes. 1 (default): one batch queue, one model in memory, ONNX Runtime spreads each "
            "batch over every core. On 2 cores, 2 workers x 1 thread were not clearly faster (within the "
            "noise), spent more CPU per request and 2.2x the memory (docs/performance.md). >1 aggregates "
            "metrics through PROMETHEUS_MULTIPROC_DIR (no process_* metrics)."
        ),
    )

    def __post_init__(self) -> None:
        self._check_ranges()
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"{_where('log_level')} must be one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.upper())
        self._resolve_api_key()

    def _check_ranges(self) -> None:
        """Every numeric setting within its range, or a SettingsError naming the flag and variable."""
        positive = ("max_batch_size", "max_batch_tokens", "queue_size", "max_text_chars", "max_items")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{_where(name)} must be at least 1, got {getattr(self, name)}")
        if self.max_body_bytes < 64:
            raise SettingsError(f"{_where('max_body_bytes')} must be at least 64")
        if self.max_in_flight < 0:
            raise SettingsError(f"{_where('max_in_flight')} must be 0 (2 x queue_size) or more")
        if self.workers < 1:
            raise SettingsError(f"{_where('workers')} must be at least 1")
        if self.ort_threads < 0:
            raise SettingsError(f"{_where('ort_threads')} must be 0 (all cores) or more")
        if self.max_wait_ms < 0:
            raise SettingsError(f"{_where('max_wait_ms')} must not be negative")
        for name in ("request_deadline_seconds", "shutdown_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_where(name)} must be positive")
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise SettingsError(f"{_where(name)} must be a TCP port (0-65535)")

    def _resolve_api_key(self) -> None:
        """Read ``api_key_file`` into ``api_key`` (one of the two), and check the key's characters."""
        if self.api_key_file is not None:
            if self.api_key:
                raise SettingsError(f"set one of {_where('api_key')} or {_where('api_key_file')}, not both")
            object.__setattr__(self, "api_key", _read_key_file(self.api_key_file))
        if self.api_key and not _API_KEY_CHARS.fullmatch(self.api_key):
            # Never echo the value: the message goes to the terminal and the logs.
            raise SettingsError(
                f"{_where('api_key')} must be visible ASCII characters without spaces "
                f"({len(self.api_key)} characters given)"
            )

    @property
    def auth_enabled(self) -> bool:
        """True when requests to POST /classify and /info must carry the API key."""
        return bool(self.api_key)

    @property
    def in_flight_limit(self) -> int:
        """The effective ``max_in_flight``: the setting, or twice ``queue_size`` when it is 0."""
        return self.max_in_flight or 2 * self.queue_size

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``TEXTCLF_*`` variables, then keyword overrides (already typed)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(env_name(spec.name))
            if raw is not None:
                values[spec.name] = _convert(spec.name, spec.type, raw)
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as ``TEXTCLF_*`` variables (hands them to worker processes)."""
        env: dict[str, str] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "api_key" and self.api_key_file is not None:
                continue  # the workers read the same file
            if value is None:
                text = ""
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[env_name(spec.name)] = text
        return env

    def public(self) -> dict[str, Any]:
        """The limits a client may want to know (shown in /info)."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "queue_size": self.queue_size,
            "max_in_flight": self.in_flight_limit,
            "max_wait_ms": self.max_wait_ms,
            "request_deadline_seconds": self.request_deadline_seconds,
            "max_text_chars": self.max_text_chars,
            "max_items": self.max_items,
            "max_body_bytes": self.max_body_bytes,
        }


# RFC 6750's b64token is narrower; any visible ASCII is accepted so `openssl rand -base64` keys work too.
_API_KEY_CHARS = re.compile(r"[\x21-\x7e]+")


def _read_key_file(path: Path) -> str:
    where = _where("api_key_file")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: cannot read {path}: {exc.__class__.__name__}") from None
    if not key:
        raise SettingsError(f"{where}: {path} is empty; refusing to start without the key it should hold")
    return key


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _where(name: str) -> str:
    return f"{name} ({env_name(name)} / {flag_name(name)})"


def _convert(name: str, type_name: object, raw: str) -> Any:
    """Parse a string (env var or flag) into the field's type; ``type_name`` is a string (postponed)."""
    kind = str(type_name)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "Path | None":
            return Path(raw) if raw.strip() else None
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{_where(name)}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=(
            "Serve a textclf model bundle over HTTP. Every flag can also be set with the environment "
            f"variable {ENV_PREFIX}<NAME> (flag > env > default)."
        ),
    )
    for spec in dataclasses.fields(Settings):
        default = spec.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        shown = "(none)" if shown in ("", None) else shown
        help_text = f"{spec.metadata['help']} [env {env_name(spec.name)}; default: {shown!s}]"
        if str(spec.type) == "bool":
            parser.add_argument(
                flag_name(spec.name),
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(flag_name(spec.name), dest=spec.name, default=None, help=help_text)
    return parser


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the command line over the environment over the defaults."""
    parsed = vars(build_parser().parse_args(argv))
    types = {spec.name: spec.type for spec in dataclasses.fields(Settings)}
    overrides: dict[str, Any] = {}
    for name, value in parsed.items():
        if value is None:
            continue
        overrides[name] = value if isinstance(value, bool) else _convert(name, types[name], value)
    return Settings.from_env(environ, **overrides)
