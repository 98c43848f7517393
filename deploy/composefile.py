"""Read docker-compose.yml as ``docker compose`` does, without Docker: YAML, then ``${VAR}`` interpolation.

Used by the static checks in ``tests/unit/deploy/`` (no Docker engine on the build machines) and by
``deploy.stack`` to reuse the compose defaults. Interpolation follows the Compose specification: ``$$`` is a
literal ``$``; ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
``${VAR:?message}`` / ``${VAR?message}`` (required), ``${VAR:+alt}`` / ``${VAR+alt}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is missing."""


@dataclass(frozen=True)
class Reference:
    """One ``${VAR...}`` in the file: the name, the operator (``:-``, ``?``...) and its argument."""

    name: str
    op: str | None
    arg: str | None


def references(text: str) -> list[Reference]:
    """Every variable reference in ``text``, in order (``$$`` escapes excluded)."""
    found = []
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        if match["bare"]:
            found.append(Reference(match["bare"], None, None))
        else:
            found.append(Reference(match["name"], match["op"], match["arg"]))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables in ``text`` from ``env`` as docker compose does."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["name"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        if op is None:
            return value or ""
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        kind = op[-1]
        if kind == "-":
            return arg if unset_or_empty else str(value)
        if kind == "?":
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return str(value)
        return "" if unset_or_empty else arg  # "+": the alternative when set

    return _REFERENCE.sub(substitute, text)


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (comments and blank lines skipped, no quoting rules needed here)."""
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not a KEY=value line: {raw!r}")
        values[key.strip()] = value.strip()
    return values


def load(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as a dict after interpolation (``env`` defaults to no variables: compose defaults)."""
    text = interpolate(path.read_text(encoding="utf-8"), env or {})
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a mapping")
    return document


def load_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as a dict without interpolation (``${...}`` left in place)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a mapping")
    return document


@dataclass(frozen=True)
class PortBinding:
    """A parsed short-syntax port: ``[host_ip:][published:]target[/protocol]``."""

    host_ip: str | None
    published: str | None
    target: str


def parse_port(spec: str | int) -> PortBinding:
    """Parse an (interpolated) short-syntax port mapping; IPv6 host addresses are not used here."""
    text = str(spec).split("/", 1)[0]
    parts = text.split(":")
    if len(parts) == 1:
        return PortBinding(None, None, parts[0])
    if len(parts) == 2:
        return PortBinding(None, parts[0], parts[1])
    if len(parts) == 3:
        return PortBinding(parts[0], parts[1], parts[2])
    raise ValueError(f"unsupported port syntax: {spec!r}")
