"""What `make compose-test` needs around docker-compose.yml on a machine without an image registry.

- A Docker daemon: the one that answers, else ``dockerd`` started here with a pidfile (default data root) and
  stopped by that PID at the end. Installs Debian's ``docker.io`` and ``debootstrap`` when root and missing.
- Stand-in base images, built locally and kept in the image store so the next run reuses them:
  ``textclf-standin/debian:bookworm`` (debootstrap minbase + ``docker import``) and
  ``textclf-standin/python:3.11-bookworm`` (Debian's Python 3.11; it trusts the host's extra CA certificates,
  for the TLS-intercepting proxy of the build machines: only this test stand-in does that).
- A stand-in for the compose file's Prometheus image (Debian's prometheus 2.42), tagged with that image's name
  unless a real image of that name is already present.
- torch for the trainer image: the PyTorch CPU wheel index when it answers, else a PEP 503 index on 127.0.0.1
  that serves the CPU wheel pip finds on this machine plus its dependencies.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO_ROOT

HERE = Path(__file__).resolve().parent
WORK = REPO_ROOT / "artifacts" / "compose-test"
BASE_IMAGE = "textclf-standin/debian:bookworm"
PYTHON_IMAGE = "textclf-standin/python:3.11-bookworm"
STANDIN_LABEL = "org.textclf.standin"
DEBIAN_MIRROR = os.environ.get("TEXTCLF_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# A fixed port: the trainer's torch layer is cached by its TORCH_INDEX_URL build argument.
INDEX_PORT = int(os.environ.get("TEXTCLF_COMPOSE_INDEX_PORT", "38503"))
DOCKERD_PIDFILE = Path("/run/textclf-compose-test-dockerd.pid")


class DockerUnavailableError(RuntimeError):
    """Docker cannot run on this machine; the message says why (the test is skipped with it)."""


def log(message: str) -> None:
    """A progress line (the whole run takes minutes: say what it is doing)."""
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def docker_client() -> str:
    """Debian's docker.io client (20.10, BuildKit built in) rather than a newer CLI without buildx."""
    chosen = os.environ.get("TEXTCLF_DOCKER")
    if chosen:
        return chosen
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise DockerUnavailableError("no docker client (install Debian's docker.io)")


def run(argv: list[str], log_file: Path | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``log_file`` its output goes there and a failure raises with the log's tail."""
    if log_file is None:
        return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({result.returncode}); {log_file}:\n{tail}")
    return result


def ensure_packages() -> None:
    """docker.io and debootstrap from Debian when missing, if this process may install them."""
    wanted = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
    missing = sorted({pkg for cmd, pkg in wanted.items() if not _which(cmd)})
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        reason = f"missing {', '.join(missing)} and not root with apt-get to install them"
        raise DockerUnavailableError(reason)
    log(f"installing Debian packages: {' '.join(missing)}")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], WORK / "logs" / "apt.log", env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], WORK / "logs" / "apt-install.log", env=env)
    log(f"installed in {time.monotonic() - started:.0f} s")


def _which(command: str) -> str | None:
    return shutil.which(command) or next(
        (str(p) for p in (Path("/usr/sbin") / command, Path("/sbin") / command) if p.is_file()), None
    )


def daemon_answers(docker: str) -> bool:
    return run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=20).returncode == 0


@contextmanager
def docker_daemon(docker: str) -> Iterator[str]:
    """Yield a description of the daemon in use; one started here is stopped by its PID on exit."""
    if daemon_answers(docker):
        yield "an already running daemon"
        return
    dockerd = _which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        reason = "no Docker daemon answers and this process cannot start dockerd (needs root)"
        raise DockerUnavailableError(reason)
    log_path = WORK / "logs" / "dockerd.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting dockerd (pidfile {DOCKERD_PIDFILE}, log {log_path})")
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [dockerd, "--pidfile", str(DOCKERD_PIDFILE)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not daemon_answers(docker):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-5:])
                raise DockerUnavailableError(f"dockerd could not run here (exit {process.poll()}): {tail}")
            time.sleep(0.5)
        yield f"dockerd started by the test (pid {process.pid})"
    finally:
        _stop_dockerd(process)


def _stop_dockerd(process: subprocess.Popen[bytes]) -> None:
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        pid = process.pid
    if process.poll() is None:
        log(f"stopping dockerd (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            process.wait(timeout=10)


def image_exists(docker: str, image: str) -> bool:
    return run([docker, "image", "inspect", image]).returncode == 0


def image_label(docker: str, image: str, label: str) -> str | None:
    result = run([docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image])
    value = result.stdout.strip()
    return value if result.returncode == 0 and value and value != "<no value>" else None


def image_size_mb(docker: str, image: str) -> float:
    result = run([docker, "image", "inspect", "--format", "{{.Size}}", image])
    return round(int(result.stdout.strip()) / 1e6, 1)


def build(
    docker: str,
    dockerfile: Path,
    tag: str,
    context: Path,
    *,
    build_args: dict[str, str] | None = None,
    network_host: bool = False,
) -> None:
    argv = [docker, "build", "--progress", "plain", "-f", str(dockerfile), "-t", tag]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    if network_host:
        argv += ["--network", "host"]
    name = tag.split(":", maxsplit=1)[0].replace("/", "_")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    run([*argv, str(context)], WORK / "logs" / f"build-{name}.log", env=env)


def ensure_debian_base(docker: str) -> bool:
    """debootstrap minbase bookworm + docker import, once: re-importing would change the image id and void
    every cached layer built on it. Returns True when it had to be made."""
    if image_exists(docker, BASE_IMAGE):
        return False
    debootstrap = _which("debootstrap")
    if debootstrap is None:
        raise DockerUnavailableError("debootstrap is missing (Debian package debootstrap)")
    with tempfile.TemporaryDirectory(prefix="textclf-rootfs-") as rootfs:
        log(f"debootstrap --variant=minbase bookworm ({DEBIAN_MIRROR}); about 90 s")
        argv = [debootstrap, "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR]
        run(argv, WORK / "logs" / "debootstrap.log")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker, "import", "--change", f"LABEL {STANDIN_LABEL}=debootstrap", "-", BASE_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr}")
    return True


def build_python_standin(docker: str) -> None:
    """The stand-in python image; the build context holds the Dockerfile and the host's extra CA certs."""
    with tempfile.TemporaryDirectory(prefix="textclf-standin-python-") as context:
        certs = Path(context) / "certs"
        certs.mkdir()
        (certs / ".keep").touch()
        for cert in sorted(HOST_CA_DIR.glob("**/*.crt")) if HOST_CA_DIR.is_dir() else []:
            shutil.copy(cert, certs / cert.name)
        dockerfile = HERE / "standin" / "python.Dockerfile"
        build(docker, dockerfile, PYTHON_IMAGE, Path(context), build_args={"BASE": BASE_IMAGE})


def ensure_prometheus_image(docker: str, image: str) -> str:
    """The compose file's Prometheus image: a real one when present, else the Debian stand-in tagged so."""
    if image_exists(docker, image) and not image_label(docker, image, STANDIN_LABEL):
        return f"{image} (real image found locally)"
    dockerfile = HERE / "standin" / "prometheus.Dockerfile"
    build(docker, dockerfile, image, HERE / "standin", build_args={"BASE": BASE_IMAGE})
    return f"{image} = stand-in from Debian's prometheus package (2.42)"


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (OSError, ValueError):
        return False


@dataclass
class TorchIndex:
    """Where the trainer image's build gets torch: ``url`` (None: the Dockerfile's default) and why."""

    url: str | None
    note: str


def torch_pin() -> str:
    for line in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError("constraints.txt pins no torch")


@contextmanager
def torch_index() -> Iterator[TorchIndex]:
    """The PyTorch CPU index when reachable; else a PEP 503 index on 127.0.0.1 over the local CPU wheel."""
    if os.environ.get("TEXTCLF_COMPOSE_TORCH_INDEX") != "local" and _reachable(f"{TORCH_CPU_INDEX}/torch/"):
        yield TorchIndex(None, f"the PyTorch CPU index ({TORCH_CPU_INDEX})")
        return
    root = WORK / "torch-index"
    simple = root / "simple"
    pin = torch_pin()
    wheels = WORK / "torch-wheels"
    if not list(wheels.glob(f"torch-{pin}*.whl")):
        log(f"collecting torch=={pin} and its dependencies with this machine's pip configuration")
        run(
            [sys.executable, "-m", "pip", "download", "-q", "-c", str(REPO_ROOT / "constraints.txt"),
             f"torch=={pin}", "-d", str(wheels)],
            WORK / "logs" / "pip-download-torch.log",
        )  # fmt: skip
    torch_wheels = list(wheels.glob(f"torch-{pin}*.whl"))
    if not torch_wheels or "+cpu" not in torch_wheels[0].name:
        raise DockerUnavailableError(
            f"the PyTorch CPU index is unreachable and pip offers no CPU wheel of torch {pin} "
            f"(got {[w.name for w in torch_wheels]}): the trainer image would not be CPU-only"
        )
    shutil.rmtree(simple, ignore_errors=True)
    for wheel in wheels.glob("*.whl"):
        project = wheel.name.split("-")[0].lower().replace("_", "-").replace(".", "-")
        (simple / project).mkdir(parents=True, exist_ok=True)
        os.link(wheel, simple / project / wheel.name)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TorchIndex(
            f"http://127.0.0.1:{INDEX_PORT}/simple",
            f"a PEP 503 index on 127.0.0.1:{INDEX_PORT} serving {torch_wheels[0].name} and "
            f"{len(list(wheels.glob('*.whl'))) - 1} dependencies (the CPU index is unreachable here)",
        )
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
