"""Test side of the ROS stack tests: a probe node in its own rclpy context (publishers, recorded subscriptions,
a background spin) and the nodes under test started as real subprocesses through `wm_vla.launcher.Stack`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@dataclass
class Received:
    """Messages of one topic with their receipt times (s, node clock)."""

    items: list[tuple[float, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, t: float, msg: Any) -> None:
        with self.lock:
            self.items.append((t, msg))

    def since(self, t0: float) -> list[tuple[float, Any]]:
        with self.lock:
            return [(t, m) for t, m in self.items if t >= t0]

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


def statuses(box: Received, node: str, t0: float = 0.0) -> list[Any]:
    """DiagnosticStatus entries of `node` (name suffix) in a recorded /diagnostics box, received after t0."""
    return [s for _, m in box.since(t0) for s in m.status if s.name.endswith(node)]


class Probe:
    """A node in a private context, spinning in a thread; `record(type, topic)` keeps everything received."""

    def __init__(self, name: str = "wm_vla_test_probe") -> None:
        """Spins a SingleThreadedExecutor: rclpy's MultiThreadedExecutor busy-loops under CPU contention (Kilted;
        see node_common/worker.py) and starved reception and the tests' feeds on 2 cores."""
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def record(self, msg_type: type, topic: str, qos: Any) -> Received:
        box = Received()
        self.node.create_subscription(msg_type, topic, lambda m: box.add(self.now(), m), qos)
        return box

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the spin thread before destroying the node. A node destroyed while that thread still waits on its
        handles is finalised later on that thread, holding the GIL; once, Fast DDS's participant teardown there
        (`set_listener`) spun forever against discovery of the stack's nodes going away, and no other Python thread,
        pytest-timeout's included, ran again."""
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class Feeder:
    """Publishes `fn(now)` at `rate_hz` from a thread until stopped (e.g. observations + joint states)."""

    def __init__(self, fn: Callable[[], None], rate_hz: float) -> None:
        self.fn, self.period = fn, 1.0 / rate_hz
        self.running = threading.Event()
        self.running.set()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running.is_set():
            self.fn()
            time.sleep(self.period)

    def stop(self) -> None:
        self.running.clear()
        self.thread.join(2)
