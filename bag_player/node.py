"""Publish a bag into ROS 2 in real time. Messages go out as recorded (serialized CDR, field-exact); the schedule
(rate, loop, start offset, remapping) comes from `wm_vla.data.bags.play`."""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence

import rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from wm_vla.data.bags.play import NS, PlayConfig, bag_topics, play_schedule


def message_class(msgtype: str) -> type | None:
    """'pkg/msg/Type' -> the rclpy message class, None when that package is not installed."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


class BagPlayer(Node):
    def __init__(self, cfg: PlayConfig, depth: int = 100) -> None:
        super().__init__("wm_vla_bag_player")
        self.cfg = cfg.validate()
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs: dict[str, Publisher] = {}
        self.skipped: dict[str, str] = {}
        for topic, msgtype in bag_topics(cfg.bag).items():
            if cfg.topics and topic not in cfg.topics:
                continue
            cls = message_class(msgtype)
            if cls is None:
                self.skipped[topic] = msgtype
                self.get_logger().warning(f"not publishing {topic}: message type {msgtype} is not installed")
                continue
            out = cfg.remap.get(topic, topic)
            self.pubs[out] = self.create_publisher(cls, out, qos)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if cfg.clock_hz > 0 else None
        self.published = 0

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until every publisher has a subscriber (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return True
            time.sleep(0.05)
        return False

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = int(bag_ns // NS), int(bag_ns % NS)
            self.clock_pub.publish(msg)

    def play(self) -> int:
        """Publish everything due, sleeping in between (and publishing /clock at clock_hz); returns the count."""
        start = time.monotonic()
        clock_period = 1.0 / self.cfg.clock_hz if self.cfg.clock_hz > 0 else None
        next_clock = 0.0
        for item in play_schedule(self.cfg):
            pub = self.pubs.get(item.topic)
            if pub is None:
                continue
            while (now := time.monotonic() - start) < item.due_s:
                if clock_period is not None and now >= next_clock:
                    self._publish_clock(item.log_ns - int((item.due_s - now) * self.cfg.rate * NS))
                    next_clock = now + clock_period
                wait = item.due_s - now
                time.sleep(min(wait, clock_period) if clock_period else wait)
            if clock_period is not None and now >= next_clock:
                self._publish_clock(item.log_ns)
                next_clock = now + clock_period
            pub.publish(item.data)
            self.published += 1
            if not rclpy.ok():
                break
        return self.published


def main(cfg: PlayConfig, wait_s: float = 0.0, args: Sequence[str] = ()) -> int:
    """Play once (or forever with loop); `args` are ROS arguments (not the wm-vla command line)."""
    rclpy.init(args=["bag_player", *args])
    try:
        node = BagPlayer(cfg)
    except BaseException:
        rclpy.try_shutdown()  # a bad bag leaves no ROS context behind
        raise
    try:
        if wait_s > 0 and not node.wait_for_subscribers(wait_s):
            node.get_logger().warning(f"not every topic has a subscriber after {wait_s} s; playing anyway")
        count = node.play()
        node.get_logger().info(f"published {count} messages")
        return count
    except KeyboardInterrupt:
        return node.published
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
