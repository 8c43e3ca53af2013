"""Entry-point helper: run one node (lifecycle nodes are configured and activated) until shutdown."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` when the launching process dies (a killed test run or launcher must not leave
    nodes spinning, or commanding a robot, with nobody supervising them). No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def run(factory: Callable[[], Node], args: Sequence[str] | None = None, autostart: bool = True, threads: int = 1) -> None:
    """`rclpy.init`, build the node, (configure + activate a lifecycle node when `autostart`), spin, shut down.

    Nodes spin single-threaded and run model calls on a `node_common.worker.NewestWorker`: rclpy's
    MultiThreadedExecutor busy-loops under CPU contention in the Kilted wheels (see node_common/worker.py).
    `threads` > 1 is kept for experiments only."""
    exit_with_parent()
    rclpy.init(args=args)
    node = factory()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if autostart and isinstance(node, LifecycleNode):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit(f"{node.get_name()}: configure failed")
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
