"""Entry-point helper: run one node (lifecycle nodes are configured and activated) until shutdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


def run(factory: Callable[[], Node], args: Sequence[str] | None = None, autostart: bool = True, threads: int = 4) -> None:
    """`rclpy.init`, build the node, (configure + activate a lifecycle node when `autostart`), spin, shut down.

    `threads` = 1 spins single-threaded (e.g. a node whose callbacks share an OpenGL context)."""
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
