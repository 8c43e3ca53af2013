"""Newest-wins inference worker: model calls run on their own thread, off the node's executor.

The nodes spin a SingleThreadedExecutor for I/O and the control timer. rclpy's MultiThreadedExecutor (Kilted wheels)
re-submits a queued callback until a pool thread starts it and never blocks meanwhile (ros2/rclpy#1452, fixed after
Kilted by ros2/rclpy#1547): on a loaded 2-core machine that busy loop holds the GIL, starves the very thread that
would make progress, and we saw nodes spin at 90 % CPU for minutes. A plain thread with a one-slot mailbox does
what the inference callback group was for, and makes "skip what arrives while busy, serve the newest" explicit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# (name, default) of the vla_node's worker parameters. Sampling runs at a lower CPU priority than I/O and the
# world_model_node's control loop: on a busy 2-core computer a control tick then waits for a core far less often
# (issue #9's deadline misses); raising a thread's nice value needs no privilege (Linux: per-thread). The
# world_model_node's own ranking thread keeps nice 0 by default (WM_WORKER_PARAMETERS): a niced thread preempted
# while it holds the GIL would stall the control thread of the same process.
WORKER_PARAMETERS: list[tuple[str, object]] = [("worker_nice", 10)]
WM_WORKER_PARAMETERS: list[tuple[str, object]] = [("worker_nice", 0)]


def lower_thread_priority(nice: int) -> bool:
    """Add `nice` to the calling thread's nice value (Linux: per thread); False where the OS does not allow it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        return False
    return True


class NewestWorker(Generic[T]):
    """Runs `handle(item)` on a daemon thread for the newest submitted item; older pending items are replaced."""

    def __init__(self, handle: Callable[[T], None], name: str, on_error: Callable[[BaseException], None],
                 nice: int = 0) -> None:
        self._handle, self._on_error, self._nice = handle, on_error, nice
        self.niced = False
        self._cond = threading.Condition()
        self._item: T | None = None
        self._running = True
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue `item` as the next one to handle; True when it replaced an item that had not been started."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._item is None and not self._busy

    def _loop(self) -> None:
        self.niced = lower_thread_priority(self._nice)
        while True:
            with self._cond:
                while self._item is None and self._running:
                    self._cond.wait()
                if not self._running:
                    return
                item, self._item, self._busy = self._item, None, True
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - reported by the node; the worker keeps serving
                self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._running = False
            self._item = None
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
