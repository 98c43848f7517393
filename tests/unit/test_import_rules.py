"""The package layering: the stages depend on ``core`` and never on each other.

``core`` holds what several stages share (the run directory, the bundle format, the engine, host helpers).
``training``, ``export``, ``service`` and ``loadtest`` import ``core`` and themselves only; ``export`` reads a
training run through ``core.run_dir``, never through ``training``. ``deploy`` (launchers of the stages)
may import ``core``; it starts the stages as ``python -m`` processes rather than importing them. Every
import counts, also inside functions and under ``if TYPE_CHECKING:``: a lazy import still ties the packages
together, and an image that copies one stage would then need the other. ``tests`` and ``docs`` (whose
generator reads every stage's settings) stand outside the layering; ``monitoring`` may import ``core`` only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "training": frozenset({"core", "training"}),
    "export": frozenset({"core", "export"}),
    "service": frozenset({"core", "service"}),
    "loadtest": frozenset({"core", "loadtest"}),
    "deploy": frozenset({"core", "deploy"}),
    "monitoring": frozenset({"core", "monitoring"}),
}
"""For each of our packages, the packages of ours its modules may import."""
OURS = frozenset(ALLOWED)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            if node.module:
                yield node.lineno, ".".join([*base, node.module])
            else:  # `from . import x`: each name is a module (or a name) of the package
                for alias in node.names:
                    yield node.lineno, ".".join([*base, alias.name])


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO_ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def violations(path: Path) -> list[str]:
    """``module:line imports X`` for each import of ``path`` that its package may not make."""
    own = module_name(path).split(".")[0]
    found = []
    for line, imported in sorted(imported_modules(path)):
        top = imported.split(".")[0]
        if top in OURS and top not in ALLOWED[own]:
            found.append(
                f"{module_name(path)} ({path.relative_to(REPO_ROOT)}:{line}) imports {imported}; "
                f"{own} may import only {sorted(ALLOWED[own])}"
            )
    return found


@pytest.mark.parametrize("package", sorted(OURS))
def test_package_imports_only_what_the_layering_allows(package: str) -> None:
    files = python_files(package)
    assert files, f"{package}/ holds no Python file: the rule table is out of date"
    broken = [message for path in files for message in violations(path)]
    assert not broken, "import rule broken:\n" + "\n".join(broken)


def test_every_top_level_package_has_a_rule() -> None:
    """A new package must be placed in the layering before it can import (or be imported by) the others."""
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests", "docs"}
    assert packages <= OURS, f"no import rule for {sorted(packages - OURS)}"


def test_a_stage_importing_another_stage_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check names the module, the line and the import (both plain and lazy, absolute and relative)."""
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "__init__.py").write_text("", encoding="utf-8")
    offender = tmp_path / "service" / "app.py"
    offender.write_text(
        "from core.engine import OnnxEngine\n"
        "from . import batcher\n"
        "def run():\n"
        "    from export.bundle import load_bundle\n"
        "import training.train\n",
        encoding="utf-8",
    )
    found = violations(offender)
    assert len(found) == 2, found
    assert found[0].startswith("service.app (service/app.py:4) imports export.bundle")
    assert found[1].startswith("service.app (service/app.py:5) imports training.train")


def test_relative_imports_resolve_inside_their_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    (tmp_path / "export").mkdir()
    module = tmp_path / "export" / "pipeline.py"
    module.write_text(
        "from .parity import gate\nfrom . import bench\nfrom .. import service\n", encoding="utf-8"
    )
    assert [name for _, name in imported_modules(module)] == ["export.parity", "export.bench", "service"]
    assert len(violations(module)) == 1
