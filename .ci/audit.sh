#!/usr/bin/env bash
# Dependency audit for `make lint`: pip-audit over the installed environment (.venv), then our policy.
#
#   bash .ci/audit.sh                      # audit .venv (what `make lint` runs)
#   AUDIT_STRICT=1 bash .ci/audit.sh       # also fail when no vulnerability service can be reached
#   AUDIT_IGNORE="GHSA-xxxx PYSEC-yyyy" bash .ci/audit.sh   # accept known findings for this run
#   bash .ci/audit.sh --policy-only REPORT.json             # apply the policy to a saved pip-audit JSON report
#
# Policy (docs/reliability.md, promise 6):
#   - Every finding is reported: package, installed version, advisory id and aliases, fixed versions.
#   - A finding FAILS the audit (exit 1) when a fixed version exists: it is actionable, so bump the pin in
#     constraints.txt (and pyproject.toml if the range excludes the fix). pip-audit reports no severity, so
#     "has a fix" is the line we can check; critical advisories almost always ship with one.
#   - A finding without a fixed version is reported as a warning and does not fail: nothing can be bumped.
#   - Accepted risks go in IGNORED_ADVISORIES below (or AUDIT_IGNORE), one id per entry, with the reason and
#     the date in a comment. An ignored id also matches its aliases (CVE/GHSA/PYSEC).
#   - The project itself (installed editable) is not on PyPI and is skipped.
#
# Vulnerability services: pip-audit asks PyPI's JSON API (https://pypi.org/pypi/NAME/VERSION/json) or OSV
# (https://api.osv.dev). Build machines that reach only a package-index mirror (the simple API) have neither:
# then pip-audit "finds nothing" while auditing nothing. This script probes both first and, when neither
# answers, says plainly that nothing was audited and exits 0 (1 with AUDIT_STRICT=1) instead of passing
# silently.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
STRICT="${AUDIT_STRICT:-0}"
TIMEOUT="${AUDIT_TIMEOUT:-10}"

# Accepted findings: "ID  # reason, YYYY-MM-DD". Empty: nothing is accepted.
IGNORED_ADVISORIES=(
)

ignore_list="${IGNORED_ADVISORIES[*]:-} ${AUDIT_IGNORE:-}"

apply_policy() {
  # $1: pip-audit JSON report. Prints the findings; exit 0 (pass), 1 (fixable finding), 3 (nothing audited).
  "$PY" - "$1" "$ignore_list" <<'PYEOF'
import json
import sys

report_path, ignore_text = sys.argv[1], sys.argv[2]
ignored = set(ignore_text.split())
with open(report_path, encoding="utf-8") as handle:
    report = json.load(handle)
dependencies = report.get("dependencies", [])
audited = [d for d in dependencies if "skip_reason" not in d]
skipped = [d for d in dependencies if "skip_reason" in d]
not_found = [d for d in skipped if "not found on PyPI" in d["skip_reason"]]

failing, warnings, accepted = [], [], []
for dep in audited:
    for vuln in dep.get("vulns", []):
        ids = {vuln["id"], *vuln.get("aliases", [])}
        line = (
            f"{dep['name']} {dep['version']}: {vuln['id']}"
            + (f" ({', '.join(sorted(vuln.get('aliases', [])))})" if vuln.get("aliases") else "")
            + (f", fixed in {', '.join(vuln['fix_versions'])}" if vuln.get("fix_versions") else ", no fix yet")
        )
        if ids & ignored:
            accepted.append(line)
        elif vuln.get("fix_versions"):
            failing.append(line)
        else:
            warnings.append(line)

print(f"audit: {len(audited)} packages audited, {len(skipped)} skipped ({len(not_found)} not found by the service)")
for title, lines in (("FAIL (a fix exists: bump the pin)", failing), ("WARN (no fix yet)", warnings),
                     ("accepted (IGNORED_ADVISORIES/AUDIT_IGNORE)", accepted)):
    for line in lines:
        print(f"audit: {title}: {line}")
if not audited:
    print("audit: WARNING: the vulnerability service answered for none of the installed packages; "
          "NOTHING WAS AUDITED (is only a package-index mirror reachable?)")
    sys.exit(3)
if failing:
    print(f"audit: {len(failing)} fixable finding(s): failing")
    sys.exit(1)
print(f"audit: passed ({len(warnings)} unfixed warning(s), {len(accepted)} accepted)")
PYEOF
}

if [[ "${1:-}" == "--policy-only" ]]; then
  rc=0
  apply_policy "$2" || rc=$?
  if [[ $rc -eq 3 ]]; then
    [[ "$STRICT" == "1" ]] && exit 1 || exit 0
  fi
  exit "$rc"
fi

if ! "$PY" -m pip_audit --version >/dev/null 2>&1; then
  echo "audit: pip-audit is not installed in $PY's environment (it is in the dev extra: make install)" >&2
  exit 2
fi

# Which vulnerability service answers from here? PyPI's JSON API first (pip-audit's default), then OSV.
service="$("$PY" - "$TIMEOUT" <<'PYEOF'
import json
import sys
import urllib.request
from importlib.metadata import version

timeout = float(sys.argv[1])
# The URL shape pip-audit uses: one installed version of one package (pip is always installed).
pip_version = version("pip")
probes = [
    ("pypi", urllib.request.Request(f"https://pypi.org/pypi/pip/{pip_version}/json")),
    ("osv", urllib.request.Request(
        "https://api.osv.dev/v1/query",
        data=json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "20.0"}).encode(),
        headers={"Content-Type": "application/json"},
    )),
]
for name, request in probes:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except Exception as exc:  # any failure means: not usable from here
        print(f"audit: {name} vulnerability service not reachable: {type(exc).__name__}: {exc}", file=sys.stderr)
        continue
    if name == "pypi" and "vulnerabilities" not in body:
        print("audit: pypi answered without vulnerability data", file=sys.stderr)
        continue
    print(name)
    break
PYEOF
)"

if [[ -z "$service" ]]; then
  echo "audit: WARNING: no vulnerability service is reachable (PyPI JSON API, OSV); the installed packages" \
       "were NOT audited. Run 'make lint' where pypi.org or api.osv.dev answers (AUDIT_STRICT=1 makes this fail)."
  [[ "$STRICT" == "1" ]] && exit 1
  exit 0
fi

report="$(mktemp -t pip-audit.XXXXXX.json)"
trap 'rm -f "$report"' EXIT
echo "audit: pip-audit over $("$PY" -c 'import sys; print(sys.prefix)') with the $service service"
status=0
"$PY" -m pip_audit --vulnerability-service "$service" --skip-editable --progress-spinner off \
  --format json --output "$report" >/dev/null || status=$?
# pip-audit: 0 = nothing found, 1 = vulnerabilities found; anything else = it failed.
if [[ $status -gt 1 || ! -s "$report" ]]; then
  echo "audit: pip-audit failed (exit $status)" >&2
  exit 2
fi
rc=0
apply_policy "$report" || rc=$?
if [[ $rc -eq 3 ]]; then
  [[ "$STRICT" == "1" ]] && exit 1
  exit 0
fi
exit "$rc"
