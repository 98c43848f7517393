"""The docker compose topology natively, for machines without Docker (``make stack``).

::

    python -m deploy.stack --model-dir models/disaster-related            # trainer?, api, prometheus
    python -m deploy.stack --with-locust --users 16 --duration 60s        # + headless load test, SLO gate
    python -m deploy.stack --port 0 --prometheus-port 0                   # free ports (tests)

The same order and health gates as docker-compose.yml:

1. trainer: data -> train -> export (``deploy.trainer``), only when the bundle is missing;
2. api: ``python -m service`` on 127.0.0.1, started once the trainer succeeded; healthy = ``/health/ready``
   answers 200 (the compose healthcheck);
3. prometheus: Debian's ``prometheus`` with monitoring/prometheus/prometheus.yml, the ``textclf`` target
   rewritten from ``api:8000`` to the native address (``deploy.prometheus``), started once the api is healthy;
   healthy = ``/-/ready``;
4. locust (``--with-locust``): ``python -m loadtest.run`` once the api is healthy; it runs once, like the
   compose service in headless mode, and its SLO verdict becomes the stack's exit code.

Grafana has no Debian package, so it runs only under compose; its dashboard (monitoring/grafana/dashboards/)
can be imported by hand into any Grafana pointed at this Prometheus.

Ctrl-C (SIGINT) or SIGTERM stops the children in reverse order, each with SIGTERM and a grace period (the api
drains admitted requests), then SIGKILL. Each child runs in its own process group, so the terminal's Ctrl-C
reaches only this supervisor and the order holds.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from core.host import free_port
from core.process import HOST, NotReadyError, http_ok, probe, service_ready, spawn, stop_group, wait_until
from core.service_command import service_command
from deploy import trainer

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """A stage failed to start or to become healthy; the message says which and why."""


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def prometheus_targets_page(base_url: str) -> str:
    """The targets page this Prometheus serves: ``/targets`` on the React UI, ``/classic/targets`` on builds
    without it (Debian's 2.42 package answers 404 to ``/targets``)."""
    status, _ = probe(f"{base_url}/targets")
    react_ui = status is not None and 200 <= status < 300
    return f"{base_url}/targets" if react_ui else f"{base_url}/classic/targets"


@dataclass
class Child:
    """A started stage: its process, how to stop it, and whether it is expected to exit by itself."""

    name: str
    process: subprocess.Popen[bytes]
    stop_timeout: float = 10.0
    one_shot: bool = False
    exit_code: int | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM to the child's process group, ``stop_timeout`` to exit, then SIGKILL. Returns the code."""
        if self.alive():
            log(f"stopping {self.name} (pid {self.process.pid})")
        self.exit_code, killed = stop_group(self.process, self.stop_timeout)
        if killed:
            log(f"{self.name} did not stop within {self.stop_timeout:.0f} s: killed it")
        return self.exit_code


@dataclass
class Supervisor:
    """Starts children in order, watches them, and stops them in reverse order on a signal or a failure."""

    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    crashed: Child | None = None

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stop_timeout: float = 10.0,
        one_shot: bool = False,
        env: dict[str, str] | None = None,
    ) -> Child:
        process = spawn(list(argv), cwd=REPO_ROOT, env=env)
        log(f"started {name} (pid {process.pid}): {' '.join(argv)}")
        child = Child(name, process, stop_timeout=stop_timeout, one_shot=one_shot)
        self.children.append(child)
        return child

    def request_stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.reason = reason
            self.stopping.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def wait_until(
        self, what: str, check: Callable[[], str | None], timeout: float, watch: Child, interval: float = 0.5
    ) -> None:
        """Poll ``check`` (None = healthy, else the problem) until healthy; fail if ``watch`` exits, time runs
        out, or a stop is requested."""
        try:
            wait_until(
                check, timeout_s=timeout, process=watch.process, stop=self.stopping, interval_s=interval
            )
        except NotReadyError as exc:
            if exc.cause == "stopped":
                raise StackError(f"stopped ({self.reason}) while waiting for {what}") from None
            if exc.cause == "exited":
                code = watch.process.returncode
                raise StackError(f"{watch.name} exited with code {code} before {what}") from None
            if exc.cause == "timeout":
                raise StackError(
                    f"{what}: not within {timeout:.0f} s (last answer {exc.last_answer})"
                ) from None
            raise StackError(str(exc)) from None
        log(f"{what}: ok")

    def watch(self) -> None:
        """Block until a stop is requested or a long-running child dies (one-shot children may finish)."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                if child.alive() or child.exit_code is not None:
                    continue
                child.exit_code = child.process.returncode
                if child.one_shot:
                    log(f"{child.name} finished with exit code {child.exit_code}")
                else:
                    self.crashed = child
                    self.request_stop(f"{child.name} exited unexpectedly with code {child.exit_code}")

    def stop_all(self) -> None:
        """Stop every child, newest first (the reverse of the start order)."""
        for child in reversed(self.children):
            child.stop()


def interruptible_runner(supervisor: Supervisor) -> Callable[[list[str]], int]:
    """A ``deploy.trainer`` runner that runs each step as a child, so Ctrl-C stops training cleanly."""

    def run(argv: list[str]) -> int:
        child = supervisor.start(argv[2], argv, stop_timeout=10.0, one_shot=True)
        try:
            while child.alive():
                if supervisor.stopping.is_set():
                    child.stop()
                    return 130
                supervisor.stopping.wait(0.5)
            return int(child.process.returncode)
        finally:
            supervisor.children.remove(child)

    return run


def locust_command(args: argparse.Namespace, api_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loadtest.run",
        "--host",
        api_url,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--duration",
        args.duration,
    ]


def start_prometheus(supervisor: Supervisor, target: str, port: int, workdir: Path) -> Child:
    """Debian's prometheus with the repository config, the ``textclf`` target set to ``target``.

    ``deploy.prometheus`` renders the config (the same file compose mounts, rule paths made absolute); the
    process is started here, in its own process group like every other child, so the stop order holds.
    """
    from deploy import prometheus

    executable = shutil.which("prometheus")
    if executable is None:
        raise StackError("prometheus not found: install Debian's prometheus package (make system-deps)")
    config = prometheus.write_config(workdir / "prometheus.yml", target, self_target=f"{HOST}:{port}")
    argv = [
        executable,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--log.level=warn",
    ]
    return supervisor.start("prometheus", argv, stop_timeout=10.0)


def run(args: argparse.Namespace, supervisor: Supervisor, workdir: Path) -> int:
    """Bring the stack up, wait for a stop, bring it down. Returns the process exit code."""
    model_dir = args.model_dir if args.model_dir.is_absolute() else REPO_ROOT / args.model_dir
    if not trainer.bundle_exists(model_dir):
        if args.no_train:
            raise StackError(f"no bundle in {model_dir} (manifest.json) and --no-train given")
        log(f"trainer: no bundle in {model_dir}: data -> train -> export")
        code = trainer.ensure_bundle(args.config, model_dir, runner=interruptible_runner(supervisor))
        if code != 0:
            raise StackError(f"trainer failed with exit code {code}")
    else:
        log(f"trainer: bundle present in {model_dir}: nothing to do")
    args.model_dir = model_dir

    port = args.port or free_port()
    api_url = f"http://{HOST}:{port}"
    # The api's drain (TEXTCLF_SHUTDOWN_TIMEOUT_SECONDS, 30 s by default) plus a margin, like compose's 35 s.
    api = supervisor.start("api", service_command(args.model_dir, port), stop_timeout=35.0)
    supervisor.wait_until(
        "api healthy (/health/ready)", service_ready(f"{api_url}/health/ready"), args.ready_timeout, api
    )

    prometheus_port = args.prometheus_port or free_port()
    prometheus_url = f"http://{HOST}:{prometheus_port}"
    prom = start_prometheus(supervisor, f"{HOST}:{port}", prometheus_port, workdir)
    supervisor.wait_until("prometheus healthy (/-/ready)", http_ok(f"{prometheus_url}/-/ready"), 30.0, prom)

    locust: Child | None = None
    if args.with_locust:
        locust = supervisor.start("locust", locust_command(args, api_url), one_shot=True)

    log("up:")
    log(f"  API         {api_url}/  (docs {api_url}/schema, metrics {api_url}/metrics)")
    log(f"  Prometheus  {prometheus_targets_page(prometheus_url)}")
    log("  Grafana     compose only (no Debian package): import monitoring/grafana/dashboards/*.json")
    log("Ctrl-C stops everything")
    supervisor.watch()
    log(f"shutting down ({supervisor.reason})")
    supervisor.stop_all()
    if supervisor.crashed is not None:
        return 1
    if locust is not None:
        if locust.exit_code is None or locust.exit_code < 0:
            log("locust did not finish before the stop")
            return 1
        return locust.exit_code
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(trainer.DEFAULT_MODEL_DIR), help="bundle folder (%(default)s)"
    )
    parser.add_argument(
        "--config", default=trainer.DEFAULT_CONFIG, help="training config, used when the bundle is missing"
    )
    parser.add_argument(
        "--no-train", action="store_true", help="fail instead of training when the bundle is missing"
    )
    parser.add_argument("--port", type=int, default=8000, help="API port on 127.0.0.1; 0 = a free port")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port; 0 = a free port")
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds for the api to become ready (%(default)s)"
    )
    parser.add_argument("--with-locust", action="store_true", help="run the headless load test + SLO gate")
    parser.add_argument("--users", type=int, default=16, help="Locust users (%(default)s)")
    parser.add_argument("--spawn-rate", type=float, default=8, help="Locust users started per second")
    parser.add_argument("--duration", default="60s", help="Locust run time (%(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    # Prometheus' rendered config and its TSDB live here for the stack's lifetime only.
    with tempfile.TemporaryDirectory(prefix="textclf-stack-") as workdir:
        try:
            return run(args, supervisor, Path(workdir))
        except StackError as exc:
            supervisor.stop_all()
            if supervisor.stopping.is_set() and supervisor.crashed is None:
                log(f"interrupted ({supervisor.reason}) before the stack was up")
                return 130
            log(f"error: {exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
