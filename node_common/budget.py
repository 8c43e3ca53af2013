"""The live latency budget of a node: a `LatencyGovernor` built from the node's parameters, fed from its worker
thread, reported on its executor's /diagnostics; every level change is a ROS warning."""

from __future__ import annotations

import logging
import threading
from typing import Any

from rclpy.node import Node

from node_common.diagnostics import Diagnostics
from wm_vla.runtime.latency.governor import GovernorConfig, LatencyGovernor, Mode

# (name, default): 0 ms = no budget; K levels largest first (the node's K leads); window/min_samples/dwell in decisions
BUDGET_PARAMETERS: list[tuple[str, Any]] = [
    ("budget_ms", 0.0), ("budget_k_levels", [16, 8, 4]), ("budget_window", 50), ("budget_min_samples", 20),
    ("budget_dwell", 20)]


class NodeBudget:
    """Thread-safe governor of one node; `from_node` returns None when `budget_ms` is 0."""

    def __init__(self, node: Node, diag: Diagnostics, cfg: GovernorConfig) -> None:
        quiet = logging.getLogger(f"wm_vla.governor.{node.get_name()}")  # changes go to the ROS log instead
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        self.node, self.diag = node, diag
        self.governor = LatencyGovernor(cfg, logger=quiet)
        self.lock = threading.Lock()

    @classmethod
    def from_node(cls, node: Node, diag: Diagnostics, k: int | None = None, gpc_opt: bool = False
                  ) -> NodeBudget | None:
        """From the node's budget_* parameters (LatencyConfigError when malformed); `k` heads the K levels; with
        `gpc_opt` the ranked modes run GPC-OPT until K is at its smallest, then GPC-OPT goes before the WM does."""
        value = lambda name: node.get_parameter(name).value  # noqa: E731
        budget = float(value("budget_ms"))
        if budget <= 0:
            return None
        levels = [int(x) for x in value("budget_k_levels")]
        if k is not None:
            levels = [k, *(x for x in levels if x < k)]
        return cls(node, diag, GovernorConfig(budget_ms=budget, k_levels=tuple(levels), gpc_opt=gpc_opt,
                                              window=int(value("budget_window")),
                                              min_samples=int(value("budget_min_samples")),
                                              dwell=int(value("budget_dwell"))))

    @property
    def mode(self) -> Mode:
        return self.governor.mode

    def record(self, stage_ms: dict[str, float]) -> None:
        with self.lock:
            change = self.governor.record(stage_ms)
        if change is not None:
            self.node.get_logger().warning(f"latency budget: {change.direction} {change.old.name} -> "
                                           f"{change.new.name} ({change.reason})")
            self.diag.warn(f"latency budget: {change.direction} to {change.new.name}")

    def values(self) -> dict[str, str]:
        """budget_* key/values for /diagnostics."""
        with self.lock:
            return {f"budget_{k}": v for k, v in self.governor.diagnostics()}
