#!/usr/bin/env bash
# Install the CPU build of torch into a venv, before the rest of `make install` (which then finds torch==VERSION
# already satisfied). Usage: install-torch.sh PYTHON VERSION INDEX_URL
#
# Why: from PyPI, `pip install torch==VERSION` on Linux resolves the CUDA build plus ~18 nvidia-*/cuda-*/triton
# wheels (several GB). The PyTorch CPU index (INDEX_URL, make's TORCH_INDEX_URL) serves VERSION+cpu instead.
# `--extra-index-url` would not do: pip merges all indexes and may still take the CUDA wheel.
#
# 1. torch VERSION already installed and CPU-only: nothing to do.
# 2. pip install --index-url INDEX_URL torch==VERSION (pip's --find-links from its configuration still apply).
# 3. INDEX_URL unreachable (air-gapped mirrors, build machines with a local wheel): resolve torch==VERSION with
#    pip's own configuration in a dry run, and install it only if that is a CPU build; else stop and say so.
set -euo pipefail

py="$1"
version="$2"
index="$3"

# Exit 0 when the installed torch is VERSION and CPU-only (a +cpu build, or no nvidia-* requirement at all).
cpu_only_check='
import importlib.metadata as m, sys
want = sys.argv[1]
try:
    dist = m.distribution("torch")
except m.PackageNotFoundError:
    sys.exit(1)
cuda = [r for r in (dist.requires or []) if r.lower().startswith(("nvidia-", "triton"))]
ok = dist.version.split("+")[0] == want and ("+cpu" in dist.version or not cuda)
kind = "CPU-only" if ok else "CUDA build: " + ", ".join(cuda[:3])
print(f"torch {dist.version} ({kind})")
sys.exit(0 if ok else 1)
'

if "$py" -c "$cpu_only_check" "$version" >/dev/null 2>&1; then
  echo "[install] $("$py" -c "$cpu_only_check" "$version") is already installed"
  exit 0
fi

echo "[install] torch $version, CPU build, from $index (about 190 MB)"
if "$py" -m pip install --quiet --retries 1 --timeout 30 --index-url "$index" "torch==$version"; then
  "$py" -c "$cpu_only_check" "$version" | sed 's/^/[install] /'
  exit 0
fi

echo "[install] $index is unreachable or lacks torch $version: trying pip's configured sources (dry run first)"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$py" -m pip install --quiet --dry-run --ignore-installed --report "$report" "torch==$version"
verdict="$("$py" - "$report" <<'EOF'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
cuda = sorted(n for n in names if n.startswith(("nvidia-", "triton")))
if cuda:
    print(f"CUDA build: torch {names.get('torch')} pulls {len(cuda)} CUDA packages ({', '.join(cuda[:3])}, ...)")
else:
    print(f"ok: torch {names.get('torch')}")
EOF
)"
if [[ "$verdict" != ok:* ]]; then
  echo "error: pip's configured sources offer the $verdict" >&2
  echo "       Set TORCH_INDEX_URL to a reachable PyTorch CPU index (mirror), or point pip at a CPU wheel:" >&2
  echo "       make install TORCH_INDEX_URL=https://your-mirror/whl/cpu   or   PIP_FIND_LINKS=DIR make install" >&2
  exit 1
fi
echo "[install] pip's configured sources offer a CPU build (${verdict#ok: }): installing it"
"$py" -m pip install --quiet "torch==$version"
"$py" -c "$cpu_only_check" "$version" | sed 's/^/[install] /'
