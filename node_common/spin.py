"""Entry-point helper: run one node (lifecycle nodes are configured and activated) until shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


def report_failure(node: Node, message: str, repeats: int = 5, period_s: float = 0.1, discovery_s: float = 3.0
                   ) -> None:
    """Publish an ERROR status on /diagnostics a few times before the node exits (after waiting up to
    `discovery_s` for a subscriber to be matched): a node that never comes up still tells the operator why."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    status = DiagnosticStatus(level=DiagnosticStatus.ERROR, name=node.get_fully_qualified_name(), message=message)
    deadline = time.monotonic() + discovery_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(repeats):
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(period_s)


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
                reason = getattr(node, "configure_error", "") or "see the log above"
                report_failure(node, f"configure failed: {reason}")
                raise SystemExit(f"{node.get_name()}: configure failed: {reason}")
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
