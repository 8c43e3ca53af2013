"""/diagnostics publishing (diagnostic_updater has no pip wheel): one DiagnosticStatus per node, key/value pairs."""

from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Diagnostics:
    """Publishes `<node>: <message>` with `values` on /diagnostics; `warn` keeps the latest problem for the period."""

    def __init__(self, node: Node, hardware_id: str = "") -> None:
        self.node, self.hardware_id = node, hardware_id
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.problem: tuple[int, str] | None = None

    def warn(self, message: str, level: int = WARN) -> None:
        self.node.get_logger().warning(message, throttle_duration_sec=2.0)
        if self.problem is None or level >= self.problem[0]:
            self.problem = (level, message)

    def publish(self, values: Mapping[str, object], message: str = "ok") -> None:
        level, text = self.problem or (OK, message)
        self.problem = None
        status = DiagnosticStatus(level=level, name=self.node.get_fully_qualified_name(), message=text,
                                  hardware_id=self.hardware_id,
                                  values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
