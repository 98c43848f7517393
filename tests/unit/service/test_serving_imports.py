"""The serving path imports only the `serve` extra: loading a bundle and answering requests never imports
torch or transformers (checked in a fresh interpreter, since the test process itself has them loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from litestar.testing import TestClient
    import service.__main__  # the CLI module too
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(model_dir=sys.argv[1]))
    with TestClient(app) as client:
        for _ in range(3000):
            if client.get("/health/ready").status_code == 200:
                break
            time.sleep(0.01)
        response = client.post("/classify", json={"texts": ["we need water", "flood"]})
        metrics = client.get("/metrics").status_code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "optimum"})
    print(json.dumps({"status": response.status_code, "metrics": metrics, "heavy": heavy}))
    """
)


def test_serving_never_imports_torch_or_transformers(tiny_bundle_dir: Path, repo_root: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundle_dir)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    assert report["metrics"] == 200
    assert report["heavy"] == []
