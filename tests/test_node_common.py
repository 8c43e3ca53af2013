"""node_common: the newest-wins inference worker and the parent-death link of node processes (real threads and
real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node_common.spacing import DecisionSpacing
from node_common.worker import NewestWorker

ROOT = Path(__file__).resolve().parents[1]


def wait_until(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_worker_serves_the_newest_item_and_reports_replaced_ones() -> None:
    started, release = threading.Event(), threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        started.set()
        release.wait(5)
        handled.append(item)

    worker: NewestWorker[int] = NewestWorker(handle, "test_worker", lambda exc: None)
    assert worker.submit(1) is False
    assert started.wait(5)                       # item 1 is running; 2 and 3 arrive while busy
    assert worker.submit(2) is False
    assert worker.submit(3) is True              # 2 had not started: replaced by 3
    release.set()
    assert wait_until(lambda: worker.idle)
    worker.stop()
    assert handled == [1, 3]


def test_worker_reports_errors_and_keeps_serving() -> None:
    errors: list[BaseException] = []
    handled: list[int] = []

    def handle(item: int) -> None:
        if item < 0:
            raise ValueError("bad item")
        handled.append(item)

    worker: NewestWorker[int] = NewestWorker(handle, "test_worker", errors.append)
    worker.submit(-1)
    assert wait_until(lambda: bool(errors))
    worker.submit(7)
    assert wait_until(lambda: handled == [7])
    worker.stop()
    assert isinstance(errors[0], ValueError)
    assert not worker._thread.is_alive()


def test_a_node_process_exits_when_its_launcher_is_killed(tmp_path: Path) -> None:
    """kill -9 of the launching process (a test run, `wm-vla up`) must not leave nodes running unsupervised."""
    pid_file = tmp_path / "node.pid"
    node = (f"import os, time; from node_common.spin import exit_with_parent; exit_with_parent(); "
            f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    launcher = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {node!r}]); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", launcher], env=env)
    try:
        assert wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip() != "", 30)
        child = int(pid_file.read_text())
        os.kill(child, 0)                         # running while its launcher lives
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_until(lambda: not _alive(child), 10), "node outlived its killed launcher"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"    # a zombie (reaped by init soon) has exited
    except FileNotFoundError:
        return False


def test_decision_spacing_refuses_a_frame_that_waited_behind_the_last_decision() -> None:
    """vla_node's sequence when inference outlasts the camera period: frame 0.0 is decided; 0.1 arrives during that
    inference (due: nothing decided yet) and waits; when its inference would start, 0.0 has been decided and 0.1 is
    no longer due. The next due frame is one period after 0.0, less the slack for stamp jitter."""
    spacing = DecisionSpacing(0.8)
    assert spacing.due(0.0)
    assert spacing.due(0.1)            # arrival check while 0.0 is still being decided
    spacing.decided(0.0)
    assert not spacing.due(0.1)        # start check: refused
    assert not spacing.due(0.7)
    assert spacing.due(0.79)           # 20 ms of stamp jitter allowed
    spacing.decided(0.79)
    spacing.reset()                    # a new task: decide on the next frame
    assert spacing.due(0.8)


def test_decision_spacing_zero_period_decides_every_frame_and_bad_periods_are_refused() -> None:
    spacing = DecisionSpacing(0.0)
    for t in (0.0, 0.01, 0.02):
        assert spacing.due(t)
        spacing.decided(t)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="decision period"):
            DecisionSpacing(bad)
