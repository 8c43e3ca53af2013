"""Entry-point helper: run one node (lifecycle nodes are configured and activated) until shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

from wm_vla.cpus import CpuAffinityError, format_cpu_list, parse_cpu_list, pin_process
from wm_vla.lifetime import exit_with_parent

__all__ = ["apply_cpu_affinity", "exit_with_parent", "report_failure", "run"]


def report_failure(node: Node, message: str, repeats: int = 5, period_s: float = 0.1, discovery_s: float = 10.0,
                   ack_s: float = 5.0) -> None:
    """Publish an ERROR status on /diagnostics before the node exits: a node that never comes up still tells the
    operator why.

    Discovery is asymmetric: our writer can match a subscriber before that subscriber has matched our writer, and
    until it has, it drops our samples (and a volatile subscriber need not ask for them again later). A
    subscriber acknowledges only once it knows our writer, on the writer's heartbeat (~3 s with Fast DDS's
    defaults). So: wait up to `discovery_s` for a match, publish once, wait up to `ack_s` for every match to
    acknowledge, then publish `repeats` times, which now reach every subscriber that acknowledged, and wait for
    those acknowledgements before returning. With nobody listening this returns after `discovery_s`."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.duration import Duration

    pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    status = DiagnosticStatus(level=DiagnosticStatus.ERROR, name=node.get_fully_qualified_name(), message=message)
    deadline = time.monotonic() + discovery_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    def publish(times: int) -> None:
        for _ in range(times):
            msg = DiagnosticArray(status=[status])
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            time.sleep(period_s)

    publish(1)
    pub.wait_for_all_acked(Duration(seconds=ack_s))
    publish(repeats)
    pub.wait_for_all_acked(Duration(seconds=ack_s))


def apply_cpu_affinity(node: Node) -> str:
    """Pin the whole node process (all its threads; later threads and child processes inherit it) to the CPUs of its
    `cpu_affinity` parameter, a taskset-style list ("" leaves it alone). Returns the list applied. CpuAffinityError
    for a malformed list or CPUs this process may not use."""
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter("cpu_affinity"):  # any type: YAML gives `cpu_affinity: 3` as an integer
        node.declare_parameter("cpu_affinity", "", ParameterDescriptor(dynamic_typing=True))
    value = node.get_parameter("cpu_affinity").value
    text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value if value is not None else "")
    cpus = parse_cpu_list(text)
    if cpus:
        threads = pin_process(cpus)
        node.get_logger().info(f"pinned to CPUs {format_cpu_list(cpus)} ({threads} threads)")
    return format_cpu_list(cpus)


def run(factory: Callable[[], Node], args: Sequence[str] | None = None, autostart: bool = True, threads: int = 1) -> None:
    """`rclpy.init`, build the node, (configure + activate a lifecycle node when `autostart`), spin, shut down.

    Nodes spin single-threaded and run model calls on a `node_common.worker.NewestWorker`: rclpy's
    MultiThreadedExecutor busy-loops under CPU contention in the Kilted wheels (see node_common/worker.py).
    `threads` > 1 is kept for experiments only."""
    exit_with_parent()
    rclpy.init(args=args)
    node = factory()
    try:
        apply_cpu_affinity(node)
    except CpuAffinityError as exc:
        name = node.get_name()
        report_failure(node, f"bad cpu_affinity: {exc}")
        node.destroy_node()
        rclpy.try_shutdown()
        raise SystemExit(f"{name}: bad cpu_affinity: {exc}") from None
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
