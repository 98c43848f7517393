"""Several worker processes (`--workers 2`): both serve, /metrics adds up every worker's counts through
PROMETHEUS_MULTIPROC_DIR, and the directory the service created is removed when it stops."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.server import ServiceProcess, run_service


def served_by(service: ServiceProcess) -> set[int]:
    return {int(e["pid"]) for e in service.json_logs() if e.get("route") == "/classify"}


def test_two_workers_share_one_metrics_view(tiny_bundle_dir: Path) -> None:
    sent = 0
    with run_service(tiny_bundle_dir, workers=2, ort_threads=1) as service:

        def send(index: int) -> int:
            # A new connection each time, several at once, so both workers accept some.
            body = {"text": f"we need water {index}"}
            return httpx.post(service.base_url + "/classify", json=body).status_code

        with ThreadPoolExecutor(8) as pool:
            # Which worker accepts a connection is the kernel's choice: send rounds until both have served.
            while len(served_by(service)) < 2 and sent < 800:
                assert list(pool.map(send, range(sent, sent + 40))) == [200] * 40
                sent += 40
        metrics = httpx.get(service.metrics_url).text
        logs = service.logs()
        workers = served_by(service)
    ok = r'^textclf_requests_total\{method="POST",route="/classify",status="200"\} (\S+)$'
    total = re.search(ok, metrics, re.M)
    assert len(workers) == 2
    assert total is not None
    assert float(total.group(1)) == sent  # both workers' counts, added up
    assert re.search(r"^textclf_ready 1\.0$", metrics, re.M)
    assert logs.count('"event": "ready"') == 2  # each worker loaded and verified the bundle
    (setup,) = [e for e in service.json_logs() if e.get("event") == "multiprocess_metrics"]
    assert setup["workers"] == 2
    assert not Path(setup["dir"]).exists()  # the service made it, the service removed it
