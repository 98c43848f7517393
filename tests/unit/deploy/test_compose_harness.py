"""make compose-test's daemon handling (tests/compose/docker_env.py): where no Docker daemon can run, the
compose tests are skipped with the reason, never passed; a daemon it starts is stopped by its pidfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compose import docker_env


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def test_no_daemon_and_not_root_is_unavailable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_env.os, "geteuid", lambda: 1000)
    with pytest.raises(docker_env.DockerUnavailableError, match="needs root"):  # noqa: SIM117
        with docker_env.docker_daemon(_script(tmp_path / "docker", "exit 1")):
            pytest.fail("entered without a daemon")


def test_dockerd_that_cannot_run_is_unavailable_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerd = _script(tmp_path / "dockerd", 'echo "failed to start daemon: operation not permitted"; exit 1')
    monkeypatch.setattr(docker_env.os, "geteuid", lambda: 0)
    monkeypatch.setattr(docker_env, "_which", lambda command: dockerd if command == "dockerd" else None)
    monkeypatch.setattr(docker_env, "WORK", tmp_path / "work")
    monkeypatch.setattr(docker_env, "DOCKERD_PIDFILE", tmp_path / "dockerd.pid")
    with pytest.raises(docker_env.DockerUnavailableError, match="operation not permitted"):  # noqa: SIM117
        with docker_env.docker_daemon(_script(tmp_path / "docker", "exit 1")):
            pytest.fail("entered without a daemon")


def test_started_daemon_is_stopped_by_its_pidfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in dockerd writes its pidfile and answers once started; leaving the block stops that PID."""
    pidfile = tmp_path / "dockerd.pid"
    ready = tmp_path / "ready"
    dockerd = _script(tmp_path / "dockerd", f'echo $$ > "$2"; touch {ready}; exec sleep 60')
    docker = _script(tmp_path / "docker", f"test -e {ready}")
    monkeypatch.setattr(docker_env.os, "geteuid", lambda: 0)
    monkeypatch.setattr(docker_env, "_which", lambda command: dockerd if command == "dockerd" else None)
    monkeypatch.setattr(docker_env, "WORK", tmp_path / "work")
    monkeypatch.setattr(docker_env, "DOCKERD_PIDFILE", pidfile)
    with docker_env.docker_daemon(docker) as description:
        pid = int(pidfile.read_text())
        assert f"pid {pid}" in description
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
