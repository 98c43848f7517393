"""Promise 6a: no secrets in the repository or the images.

Every file git tracks (and every untracked file git would add) is scanned for private keys and tokens in the
formats of the services this project touches or could plausibly hold keys for (cloud, GitHub, Hugging Face,
Weights & Biases, Slack, OpenAI-style keys, JWTs) and for secret-looking assignments with literal values.
The image build context (``.dockerignore``) must leave out ``.env`` files and git metadata, and no
Dockerfile may bake a secret into an ``ENV``/``ARG`` or copy an ``.env`` file.

The patterns are assembled at run time, so this file holds no string that matches them itself.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

MAX_BYTES = 2_000_000
DASHES = "-" * 5

SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "private key": re.compile(
        DASHES + r"BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?" + DASHES
    ),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe live key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
    "JSON Web Token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "W&B API key": re.compile(r"WANDB_API_KEY\s*[=:]\s*['\"]?[0-9a-f]{40}"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$<{]{6,}@[\w.-]+"),
    "secret assignment": re.compile(
        r"(?i)\b[\w.-]*(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)\b"
        r"\s*[:=]\s*['\"]([^'\"\s]{12,})['\"]"
    ),
}
# Values that are obviously not secrets: placeholders, variable references, examples.
PLACEHOLDER = re.compile(
    r"(?i)(change[-_]?me|example|placeholder|dummy|redacted|xxxx|\$\{|\$\(|<[^>]+>|\*{3})"
)


def repository_files(root: Path) -> list[Path]:
    """Files git tracks plus untracked files it would add (not ignored): what a commit could publish."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    paths = {root / name for name in listed.decode("utf-8", "surrogateescape").split("\0") if name}
    return sorted(path for path in paths if path.is_file())


def scan_text(text: str) -> list[tuple[str, int, str]]:
    """(kind, line number, excerpt) for every secret-looking match."""
    findings = []
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(match.lastindex or 0)
            if kind == "secret assignment" and PLACEHOLDER.search(value):
                continue
            line = text.count("\n", 0, match.start()) + 1
            findings.append((kind, line, match.group(0)[:12] + "…"))
    return findings


def scan_files(paths: Iterable[Path], root: Path) -> list[str]:
    findings = []
    for path in paths:
        if path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        for kind, line, excerpt in scan_text(data.decode("utf-8", "replace")):
            findings.append(f"{path.relative_to(root)}:{line}: {kind} ({excerpt})")
    return findings


def test_no_secrets_in_the_repository() -> None:
    files = repository_files(REPO_ROOT)
    assert len(files) > 50, "git listed almost nothing: is this a checkout?"
    assert scan_files(files, REPO_ROOT) == []


def test_no_env_files_or_key_files_are_tracked() -> None:
    names = [path.relative_to(REPO_ROOT).as_posix() for path in repository_files(REPO_ROOT)]
    env_files = [n for n in names if re.search(r"(^|/)\.env(\.|$)", n) and not n.endswith(".env.example")]
    key_files = [
        n for n in names if re.search(r"\.(pem|key|p12|pfx|jks|keystore)$|(^|/)id_(rsa|ed25519|ecdsa)$", n)
    ]
    assert env_files == []
    assert key_files == []


def _planted() -> dict[str, str]:
    """One fake secret per pattern, built from pieces so this file never holds one whole."""
    return {
        "private key": DASHES + "BEGIN OPENSSH " + "PRIVATE KEY" + DASHES + "\nb3BlbnNzaC1rZXk=\n",
        "AWS access key id": "aws_key = " + "AKIA" + "Q" * 16,
        "GitHub token": "token: " + "ghp_" + "a1B2" * 9,
        "Hugging Face token": "HF_TOKEN=" + "hf_" + "AbCdEfGh" * 4,
        "Slack token": "xox" + "b-" + "1234567890-abcdef",
        "OpenAI-style key": "OPENAI=" + "sk-" + "proj-" + "Zx9" * 12,
        "Google API key": "key=" + "AIza" + "S" * 35,
        "Stripe live key": "sk" + "_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "JSON Web Token": "eyJ"
        + "hbGciOiJIUzI1NiJ9"
        + ".eyJ"
        + "zdWIiOiIxMjM0NTY3ODkwIn0"
        + ".SflKxwRJSMeKKF2QT4",
        "W&B API key": "WANDB_API_KEY" + "=" + "0123456789abcdef" * 2 + "01234567",
        "URL with a password": "postgres://" + "admin:" + "s3cr3tpass" + "@db.internal:5432/app",
        "secret assignment": 'GF_ADMIN_PASSWORD = "' + "Tr0ub4dor" + '&3-horse"',
    }


@pytest.mark.parametrize("kind", list(SECRET_PATTERNS))
def test_scanner_finds_each_kind_of_planted_secret(kind: str, tmp_path: Path) -> None:
    """The scan above can fail: every pattern catches a realistic planted secret in a file."""
    planted = tmp_path / "settings.py"
    planted.write_text(f"# config\n{_planted()[kind]}\n", encoding="utf-8")
    findings = scan_files([planted], tmp_path)
    assert any(f": {kind} (" in finding for finding in findings), findings


def test_scanner_ignores_placeholders_and_references(tmp_path: Path) -> None:
    harmless = tmp_path / "compose.yml"
    harmless.write_text(
        'password: "${GRAFANA_ADMIN_PASSWORD}"\n'
        'api_key = "<your-api-key-here>"\n'
        'secret = "change-me-please"\n',
        encoding="utf-8",
    )
    assert scan_files([harmless], tmp_path) == []


def dockerignore_patterns(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_image_build_context_leaves_out_secrets_and_git() -> None:
    patterns = dockerignore_patterns(REPO_ROOT / ".dockerignore")
    for needed in (".env", ".git"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    assert any(p in patterns for p in (".env.*", ".env*")), ".dockerignore must exclude .env.* variants"


def test_dockerfiles_bake_in_no_secret() -> None:
    dockerfiles = [
        p for p in repository_files(REPO_ROOT) if p.name == "Dockerfile" or p.name.endswith(".Dockerfile")
    ]
    assert dockerfiles, "no Dockerfile found"
    secret_name = re.compile(r"(?i)(password|passwd|secret|token|api_?key|private_?key)")
    problems = []
    for path in dockerfiles:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            stripped = line.strip()
            words = stripped.split()
            if not words:
                continue
            instruction = words[0].upper()
            if instruction in {"ENV", "ARG"} and secret_name.search(stripped) and "=" in stripped:
                problems.append(f"{path.name}:{number}: {instruction} sets a secret-looking value")
            if instruction in {"COPY", "ADD"} and re.search(r"(^|\s|/)\.env(\s|$)", stripped):
                problems.append(f"{path.name}:{number}: copies an .env file into the image")
    assert problems == []
