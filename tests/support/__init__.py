"""What tests share: a tiny BERT, small data files, tiny bundles and runs, fake engines, the service in
process and as a subprocess. Nothing here downloads. Fixtures that wrap these are in conftest.py files."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
