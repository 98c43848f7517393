"""Promise 6c: ``make lint`` audits the installed packages (``.ci/audit.sh``: pip-audit, then the policy).

The policy is checked offline on pip-audit JSON reports: a finding with a fixed version fails, one without
is a warning, accepted ids (or their aliases) pass, and a run that audited nothing says so instead of
passing silently (and fails under ``AUDIT_STRICT=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "audit.sh"


def report(*dependencies: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(dependencies), "fixes": []}


def dep(name: str, version: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": version, "vulns": list(vulns)}


def vuln(ident: str, fixes: list[str], aliases: list[str] | None = None) -> dict[str, Any]:
    return {"id": ident, "fix_versions": fixes, "aliases": aliases or [], "description": "..."}


def run_policy(tmp_path: Path, data: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return subprocess.run(
        ["bash", str(SCRIPT), "--policy-only", str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "AUDIT_IGNORE": "", "AUDIT_STRICT": "0", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_finding_with_a_fix_fails_and_names_it(tmp_path: Path) -> None:
    result = run_policy(
        tmp_path,
        report(
            dep("jinja2", "3.1.2", vuln("GHSA-h5c8-rqwp-cp95", ["3.1.3"], ["CVE-2024-22195"])), dep("ok", "1")
        ),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195), fixed in 3.1.3" in result.stdout


def test_a_finding_without_a_fix_is_reported_but_passes(tmp_path: Path) -> None:
    result = run_policy(tmp_path, report(dep("somelib", "1.0", vuln("PYSEC-2099-1", []))))
    assert result.returncode == 0, result.stdout
    assert "WARN (no fix yet): somelib 1.0: PYSEC-2099-1, no fix yet" in result.stdout


def test_an_accepted_alias_passes(tmp_path: Path) -> None:
    data = report(dep("jinja2", "3.1.2", vuln("GHSA-h5c8-rqwp-cp95", ["3.1.3"], ["CVE-2024-22195"])))
    result = run_policy(tmp_path, data, AUDIT_IGNORE="CVE-2024-22195")
    assert result.returncode == 0, result.stdout
    assert "accepted" in result.stdout


def test_nothing_audited_is_said_plainly_and_fails_when_strict(tmp_path: Path) -> None:
    skipped = {
        "name": "numpy",
        "version": "2.4.6",
        "skip_reason": "Dependency not found on PyPI and could not",
    }
    result = run_policy(tmp_path, report(skipped))
    assert result.returncode == 0
    assert "NOTHING WAS AUDITED" in result.stdout
    assert run_policy(tmp_path, report(skipped), AUDIT_STRICT="1").returncode == 1


def test_make_lint_runs_the_audit() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    lint = makefile[makefile.index("lint:") :].split("\n\n")[0]
    assert "bash .ci/audit.sh" in lint
