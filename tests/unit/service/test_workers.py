"""Several worker processes (`--workers 2`): both serve, /metrics adds up every worker's counts through
PROMETHEUS_MULTIPROC_DIR, and the directory the service created is removed when it stops."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import run_service

pytestmark = pytest.mark.integration


def test_two_workers_share_one_metrics_view(tiny_bundle_dir: Path) -> None:
    requests = 40
    with run_service(tiny_bundle_dir, workers=2, ort_threads=1) as service:

        def send(index: int) -> int:
            # A new connection each time, several at once, so both workers accept some.
            return httpx.post(
                service.base_url + "/classify", json={"text": f"we need water {index}"}
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(send, range(requests))) == [200] * requests
        metrics = httpx.get(service.metrics_url).text
        logs = service.logs()
    ok = r'^textclf_requests_total\{method="POST",route="/classify",status="200"\} (\S+)$'
    total = re.search(ok, metrics, re.M)
    assert total is not None
    assert float(total.group(1)) == requests
    assert re.search(r"^textclf_ready 1\.0$", metrics, re.M)
    assert logs.count('"event": "ready"') == 2  # each worker loaded and verified the bundle
    served_by = {e["pid"] for e in service.json_logs() if e.get("route") == "/classify"}
    assert len(served_by) == 2  # the total above adds up both workers' counts
    (setup,) = [e for e in service.json_logs() if e.get("event") == "multiprocess_metrics"]
    assert setup["workers"] == 2
    assert not Path(setup["dir"]).exists()  # the service made it, the service removed it
