"""`make stack` for real on the tiny bundle: the service comes up, Prometheus scrapes it with the project's
config and rules, and Ctrl-C (SIGINT) brings everything down in reverse order. Also: the service under the
read-only root filesystem that compose and Kubernetes give it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.host import free_port
from core.process import NotReadyError, http_ok, wait_until
from core.service_command import service_command
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs Debian's prometheus (make system-deps)"
)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    body = get_json(f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def eventually(check: Callable[[], bool], timeout: float, what: str, stack: StackProcess) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if stack.process.poll() is not None:
            pytest.fail(f"the stack exited with {stack.process.returncode} before {what}:\n{stack.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{stack.output()}")
        time.sleep(0.5)


@dataclass
class StackProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    api_url: str
    prometheus_url: str

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_stack(tmp_path: Path, model_dir: Path, ready_timeout: float = 60) -> StackProcess:
    api_port, prometheus_port = free_port(), free_port()
    log_path = tmp_path / "stack.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deploy.stack",
                "--model-dir",
                str(model_dir),
                "--no-train",
                "--port",
                str(api_port),
                "--prometheus-port",
                str(prometheus_port),
                "--ready-timeout",
                str(ready_timeout),
            ],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return StackProcess(
        process, log_path, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}"
    )


@pytest.fixture
def running_stack(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[StackProcess]:
    stack = start_stack(tmp_path, tiny_bundle_dir)
    try:
        yield stack
    finally:
        if stack.process.poll() is None:  # the test failed before its own SIGINT
            stack.process.send_signal(signal.SIGINT)
            try:
                stack.process.wait(60)
            except subprocess.TimeoutExpired:
                stack.process.kill()
                stack.process.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (exited, not yet reaped by a parent that has itself exited).
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


@needs_prometheus
def test_prometheus_scrapes_the_service_and_sigint_stops_everything(running_stack: StackProcess) -> None:
    stack = running_stack

    def textclf_up() -> bool:
        return [r["value"][1] for r in query(stack.prometheus_url, 'up{job="textclf"}')] == ["1"]

    eventually(textclf_up, 60, 'up{job="textclf"} == 1', stack)

    # Traffic through the API shows up in Prometheus under the contract's names.
    request = urllib.request.Request(
        f"{stack.api_url}/classify",
        data=json.dumps({"text": "the river flooded, we need water"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    def texts_counted() -> bool:
        result = query(stack.prometheus_url, 'sum(textclf_texts_total{job="textclf"})')
        return bool(result) and float(result[0]["value"][1]) >= 1

    eventually(texts_counted, 30, "textclf_texts_total >= 1 in Prometheus", stack)

    # The same rule files compose mounts are loaded (the native config makes their paths absolute).
    groups = get_json(f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"]
    assert groups
    assert {Path(group["file"]).parent.name for group in groups} == {"rules"}

    output = stack.output()
    pids = {name: int(pid) for name, pid in re.findall(r"\[stack\] started (\w+) \(pid (\d+)\)", output)}
    assert set(pids) == {"api", "prometheus"}, output

    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(60) == 0, stack.output()
    output = stack.output()
    assert output.index("stopping prometheus") < output.index("stopping api"), "reverse start order"
    assert not [name for name, pid in pids.items() if pid_alive(pid)], output
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"{stack.api_url}/health/live", timeout=2)


@needs_prometheus
def test_a_bundle_the_service_cannot_load_fails_the_stack_cleanly(tmp_path: Path) -> None:
    broken = tmp_path / "broken-bundle"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}", encoding="utf-8")
    stack = start_stack(tmp_path, broken, ready_timeout=30)
    try:
        assert stack.process.wait(60) == 1, stack.output()
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
    output = stack.output()
    # The service stays up but reports the rejected bundle on /health/ready; the stack says why and stops.
    assert "the service rejected the model bundle" in output
    assert "schema" in output.split("the service rejected the model bundle", 1)[1].splitlines()[0]
    assert "started prometheus" not in output, "nothing after a failed health gate"


def _can_unshare_mounts() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs root and unshare(1) to remount / read-only")
@pytest.mark.parametrize("workers", [1, 2])
def test_service_runs_with_a_read_only_root_and_a_tmp_tmpfs(
    tmp_path: Path, tiny_bundle_dir: Path, workers: int
) -> None:
    """What compose's `read_only: true` + tmpfs /tmp (and Kubernetes' readOnlyRootFilesystem) impose, without
    Docker: a private mount namespace where / is read-only and /tmp is an empty tmpfs."""
    # /tmp is replaced inside the namespace, so the bundle has to live elsewhere.
    outside_tmp = Path(tempfile.mkdtemp(prefix="textclf-ro-", dir="/var/tmp"))
    try:
        bundle = shutil.copytree(tiny_bundle_dir, outside_tmp / "bundle")
        # A checkout (and its .venv) under /tmp would vanish under the tmpfs: then the writable tmpfs goes on
        # an empty folder instead, and TMPDIR/HOME point there, which still proves "writes only to TMPDIR".
        under_tmp = any(Path(p).resolve().is_relative_to("/tmp") for p in (REPO_ROOT, sys.prefix))
        writable = outside_tmp / "scratch" if under_tmp else Path("/tmp")
        writable.mkdir(exist_ok=True)
        port = free_port()
        script = (
            "mount -o remount,bind,ro / && "
            f"mount -t tmpfs -o size=64m,mode=1777 tmpfs {writable} || exit 98\n"
            f"touch {REPO_ROOT}/.read-only-probe 2>/dev/null && exit 99\n"
            f"cd {writable} && exec env PYTHONDONTWRITEBYTECODE=1 HOME={writable} TMPDIR={writable} "
            f"{shlex.join(service_command(bundle, port, workers=workers))}\n"
        )
        log_path = tmp_path / "service.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until(http_ok(f"{base}/health/ready"), timeout_s=60, process=process, interval_s=0.3)
            except NotReadyError as exc:
                pytest.fail(f"{exc}:\n{log_path.read_text()}")
            request = urllib.request.Request(
                f"{base}/classify",
                data=json.dumps({"texts": ["flood in the village", "nice lunch"]}).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert len(json.loads(response.read())["results"]) == 2
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                assert b"textclf_texts_total" in response.read()
        finally:
            process.terminate()
            process.wait(60)
        log = log_path.read_text(encoding="utf-8", errors="replace")
        assert "Read-only file system" not in log
        assert "Traceback" not in log
        assert not (REPO_ROOT / ".read-only-probe").exists()
    finally:
        shutil.rmtree(outside_tmp, ignore_errors=True)
