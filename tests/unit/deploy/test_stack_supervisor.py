"""deploy.stack's supervisor: reverse-order shutdown, SIGKILL for a child ignoring SIGTERM, crash detection.

The children are tiny Python processes that write down when they receive SIGTERM.
"""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import pytest

from deploy import stack

CHILD = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    name, record, mode = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    def on_term(signum, frame):
        with record.open("a") as f:
            f.write(name + "\\n")
        if mode != "stubborn":
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    (record.parent / (name + ".started")).touch()
    if mode == "crash":
        sys.exit(7)
    if mode == "oneshot":
        sys.exit(0)
    while True:
        time.sleep(0.05)
    """
)


def start(
    supervisor: stack.Supervisor, name: str, record: Path, mode: str = "normal", **kw: object
) -> stack.Child:
    child = supervisor.start(name, [sys.executable, "-c", CHILD, name, str(record), mode], **kw)  # type: ignore[arg-type]
    marker = record.parent / f"{name}.started"
    supervisor.wait_until(
        f"{name} started", lambda: None if marker.exists() else "not yet", 30.0, child, 0.05
    )
    return child


def test_children_stop_in_reverse_start_order(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    children = [start(supervisor, name, record) for name in ("api", "prometheus", "locust")]
    supervisor.stop_all()
    assert record.read_text().split() == ["locust", "prometheus", "api"]
    assert all(not child.alive() for child in children)
    assert [child.exit_code for child in children] == [0, 0, 0]


def test_a_child_that_ignores_sigterm_is_killed_after_its_grace_period(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    child = start(supervisor, "stubborn", record, mode="stubborn", stop_timeout=0.5)
    assert child.stop() == -9
    assert record.read_text().split() == ["stubborn"], "it was asked politely first"


def test_a_crashed_long_running_child_stops_the_stack(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    start(supervisor, "prometheus", record)
    crashing = supervisor.start("api", [sys.executable, "-c", CHILD, "api", str(record), "crash"])
    supervisor.watch()  # returns because the api died
    assert supervisor.crashed is crashing
    assert "api exited unexpectedly with code 7" in supervisor.reason
    supervisor.stop_all()
    assert record.read_text().split() == ["prometheus"]


def test_a_finished_one_shot_child_does_not_stop_the_stack(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    start(supervisor, "api", record)
    oneshot = supervisor.start(
        "locust", [sys.executable, "-c", CHILD, "locust", str(record), "oneshot"], one_shot=True
    )
    oneshot.process.wait(30)
    # A stop requested elsewhere (the signal handler in real use) ends the watch, not the one-shot's exit.
    timer = threading.Timer(1.0, supervisor.request_stop, args=("SIGINT",))
    timer.start()
    supervisor.watch()
    timer.join()
    assert supervisor.crashed is None
    assert supervisor.reason == "SIGINT"
    assert oneshot.exit_code == 0
    supervisor.stop_all()


def test_waiting_for_health_fails_fast_when_the_child_dies(tmp_path: Path) -> None:
    supervisor = stack.Supervisor()
    crashing = supervisor.start("api", [sys.executable, "-c", CHILD, "api", str(tmp_path / "r"), "crash"])
    with pytest.raises(stack.StackError, match="api exited with code 7 before api healthy"):
        supervisor.wait_until("api healthy", lambda: "503", 60.0, crashing)


def test_waiting_for_health_gives_up_on_a_stop_request(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    child = start(supervisor, "api", record)
    supervisor.request_stop("SIGTERM")
    with pytest.raises(stack.StackError, match="stopped \\(SIGTERM\\)"):
        supervisor.wait_until("api healthy", lambda: "503", 60.0, child)
    supervisor.stop_all()


def test_interrupted_trainer_step_is_stopped_and_reported(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    supervisor = stack.Supervisor()
    run = stack.interruptible_runner(supervisor)
    threading.Timer(0.5, supervisor.request_stop, args=("SIGINT",)).start()
    code = run([sys.executable, "-c", CHILD, "train", str(record), "normal"])
    assert code == 130
    assert record.read_text().split() == ["train"]
    assert supervisor.children == []


def test_missing_bundle_with_no_train_fails_before_starting_anything(tmp_path: Path) -> None:
    args = stack.parse_args(["--model-dir", str(tmp_path / "none"), "--no-train"])
    supervisor = stack.Supervisor()
    with pytest.raises(stack.StackError, match="--no-train"):
        stack.run(args, supervisor, tmp_path)
    assert supervisor.children == []
