"""Run Debian's ``prometheus`` natively with the project's configuration (``make stack``, integration tests).

``monitoring/prometheus/prometheus.yml`` is written for docker compose (target ``api:8000``, rules next to it
under /etc/prometheus). Outside compose, render a copy pointed at the service and start Prometheus on it::

    from deploy.prometheus import run_prometheus

    with run_prometheus("127.0.0.1:8000", scrape_interval="1s") as prom:
        print(prom.url)            # http://127.0.0.1:<free port>; /-/ready already answered 200
    # stopped: SIGTERM, then SIGKILL after 10 s; the temporary storage is removed

Or from a shell (runs until Ctrl-C)::

    python -m deploy.prometheus --target 127.0.0.1:8000 --port 9090
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.host import free_port
from core.process import NotReadyError, http_ok, spawn, stop_group, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO_ROOT / "monitoring" / "prometheus" / "prometheus.yml"
JOB = "textclf"
SELF_JOB = "prometheus"


def render_config(
    target: str,
    *,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    self_target: str | None = None,
    source: Path = CONFIG_FILE,
) -> dict[str, Any]:
    """The project's Prometheus config with the ``textclf`` job scraping ``target`` (``host:port``).

    Args:
        target: Where the service's /metrics listens.
        scrape_interval: Override every job's scrape interval (e.g. ``"1s"`` in tests); the scrape timeout
            follows it down, Prometheus refuses a timeout longer than the interval.
        evaluation_interval: Override the rule evaluation interval; defaults to ``scrape_interval`` when that
            is given.
        self_target: Where this Prometheus listens, for its own ``prometheus`` job.
        source: The config to start from.

    Rule file paths are made absolute (relative to ``source``), so the copy can live anywhere.
    """
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    config["rule_files"] = [
        str(source.resolve().parent / pattern) for pattern in config.get("rule_files", [])
    ]
    global_config = config.setdefault("global", {})
    if scrape_interval:
        global_config["scrape_interval"] = scrape_interval
        global_config["scrape_timeout"] = scrape_interval
    evaluation_interval = evaluation_interval or scrape_interval
    if evaluation_interval:
        global_config["evaluation_interval"] = evaluation_interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    if JOB not in jobs:
        raise ValueError(f"{source} has no scrape job named {JOB!r}")
    overrides = {JOB: target, SELF_JOB: self_target}
    for name, job in jobs.items():
        if overrides.get(name):
            job["static_configs"] = [{"targets": [overrides[name]]}]
        if scrape_interval:
            job.pop("scrape_interval", None)
            job.pop("scrape_timeout", None)
    return config


def write_config(path: Path, target: str, **options: Any) -> Path:
    """Write ``render_config(target, **options)`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(render_config(target, **options), sort_keys=False), encoding="utf-8")
    return path


@dataclass
class RunningPrometheus:
    """A Prometheus started by ``run_prometheus``."""

    url: str
    port: int
    config_path: Path
    storage_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def run_prometheus(
    target: str,
    *,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    port: int | None = None,
    workdir: Path | None = None,
    binary: str = "prometheus",
    ready_timeout: float = 30.0,
) -> Iterator[RunningPrometheus]:
    """Start ``prometheus`` on 127.0.0.1 (``port`` or a free one) scraping ``target``; stop it on exit.

    Args:
        target: ``host:port`` of the service's /metrics.
        scrape_interval: See ``render_config``.
        evaluation_interval: See ``render_config``.
        port: Listen port; a free one when None.
        workdir: Where the config, TSDB and log go (kept); a temporary folder, removed on exit, when None.
        binary: The Prometheus executable (Debian's package installs ``/usr/bin/prometheus``).
        ready_timeout: Seconds to wait for ``/-/ready``.

    Raises:
        FileNotFoundError: ``binary`` is not installed (``make system-deps``).
        RuntimeError: Prometheus exited or was not ready in time (the message carries its log).
    """
    executable = shutil.which(binary)
    if executable is None:
        raise FileNotFoundError(
            f"{binary!r} not found: install Debian's prometheus package (make system-deps)"
        )
    port = port or free_port()
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="textclf-prometheus-")) if workdir is None else workdir
    folder.mkdir(parents=True, exist_ok=True)
    config_path = write_config(
        folder / "prometheus.yml",
        target,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        self_target=f"127.0.0.1:{port}",
    )
    storage_dir = folder / "data"
    log_path = folder / "prometheus.log"
    command = [
        executable,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={storage_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    process = spawn(command, log_path=log_path, cwd=folder)
    running = RunningPrometheus(url, port, config_path, storage_dir, log_path, process)
    try:
        try:
            wait_until(http_ok(f"{url}/-/ready"), timeout_s=ready_timeout, process=process, interval_s=0.1)
        except NotReadyError as exc:
            raise RuntimeError(f"prometheus {exc}:\n{running.logs()[-4000:]}") from None
        yield running
    finally:
        stop_group(process, 10.0)
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run Prometheus with the project's config and rules.")
    parser.add_argument("--target", default="127.0.0.1:8000", help="host:port of the service's /metrics.")
    parser.add_argument("--port", type=int, default=9090, help="Port Prometheus listens on (127.0.0.1).")
    parser.add_argument("--scrape-interval", default=None, help="Override the scrape interval, e.g. 1s.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep config, data and log here.")
    args = parser.parse_args(argv)
    with run_prometheus(
        args.target, scrape_interval=args.scrape_interval, port=args.port, workdir=args.workdir
    ) as prom:
        print(f"prometheus ready at {prom.url} (config {prom.config_path}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            prom.process.wait()


if __name__ == "__main__":
    main()
