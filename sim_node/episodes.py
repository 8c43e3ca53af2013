"""Episode client over ROS: reset the sim_robot (`/sim/reset`), wait for each episode's end on `/sim/status`, and
measure camera stamp -> command latency from the commands' observation-stamp lineage.

    python -m sim_node.episodes --episodes 10 --out episodes.json
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from wm_vla_interfaces.msg import RankingResult

from node_common.msgs import COMMAND_QOS, LATCHED_QOS, to_ns
from node_common.spin import exit_with_parent
from wm_vla.robots import load_profile
from world_model_node.node import RANKING_TOPIC


def lineage_ns(msg: Float64MultiArray | TwistStamped | JointTrajectory) -> int:
    """The observation stamp a command was computed from (0: a hold command; TwistStamped stop: now)."""
    if isinstance(msg, (TwistStamped, JointTrajectory)):
        return to_ns(msg.header.stamp)
    for dim in msg.layout.dim:
        if dim.label.startswith("obs_stamp_ns="):
            return int(dim.label.split("=", 1)[1])
    return 0


class EpisodeClient(Node):
    def __init__(self, robot: str = "arm", context: Any = None, use_sim_time: bool = False) -> None:
        super().__init__("wm_vla_episodes", context=context,
                         parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self.profile = load_profile(robot)
        self.cond = threading.Condition()
        self.status: dict[str, Any] = {}
        self.latency_ms: list[float] = []
        self.lineages: set[int] = set()
        self.commands = 0
        self.create_subscription(String, "/sim/status", self._on_status, LATCHED_QOS)
        self.decision_ms: list[float] = []
        # per decision: world_model_node's stage times (RankingResult: candidates_age, queue, total = ranking, ...)
        # and `decision`, camera stamp -> RankingResult receipt here
        self.rank_stages: list[dict[str, float]] = []
        self.node_values: dict[str, dict[str, float]] = {}  # node -> its latest numeric /diagnostics values
        self.create_subscription(RankingResult, RANKING_TOPIC, self._on_ranking, COMMAND_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        for spec in self.profile.controllers.values():
            if spec.interface == "twist":
                self.create_subscription(TwistStamped, spec.topic, self._on_command, COMMAND_QOS)
            elif spec.interface == "position_commands":
                self.create_subscription(Float64MultiArray, spec.topic, self._on_command, COMMAND_QOS)
            else:
                self.create_subscription(JointTrajectory, spec.topic, self._on_command, COMMAND_QOS)
        self.reset_client = self.create_client(Trigger, "/sim/reset")

    def _on_status(self, msg: String) -> None:
        with self.cond:
            self.status = json.loads(msg.data)
            self.cond.notify_all()

    def _on_ranking(self, msg: RankingResult) -> None:
        """Camera stamp -> RankingResult receipt: the whole decision through the ROS stack."""
        decision = (self.get_clock().now().nanoseconds - to_ns(msg.header.stamp)) / 1e6
        with self.cond:
            self.decision_ms.append(decision)
            self.rank_stages.append({**dict(zip(msg.stage_names, map(float, msg.stage_ms))), "decision": decision})

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {}
            for kv in status.values:
                try:
                    values[kv.key] = float(kv.value)
                except ValueError:
                    continue
            with self.cond:
                self.node_values[status.name.lstrip("/")] = values

    def _on_command(self, msg: Float64MultiArray | TwistStamped | JointTrajectory) -> None:
        now = self.get_clock().now().nanoseconds
        stamp = lineage_ns(msg)
        with self.cond:
            self.commands += 1
            if stamp and stamp not in self.lineages:  # first command of a chunk
                self.lineages.add(stamp)
                self.latency_ms.append((now - stamp) / 1e6)
                self.cond.notify_all()

    def wait_for(self, pred: Any, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.status), timeout)

    def reset(self, timeout: float = 30.0) -> dict[str, Any]:
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("no /sim/reset service")
        future = self.reset_client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("/sim/reset did not answer")
            time.sleep(0.01)
        return json.loads(future.result().message)

    def warm_up(self, timeout: float) -> None:
        """Wait for the first command computed from an observation (lineage != 0). Until then the stack is still
        starting (DDS discovery between the nodes, a node without joint states yet), and a first decision's latency
        would measure that start-up, not the stack: the whole chain camera -> command has now run once, and this
        client's own subscriptions are matched."""
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.lineages), timeout):
                raise TimeoutError(f"no command computed from an observation within {timeout:g} s of the first episode "
                                   f"({self.commands} hold commands): is the policy running and the task accepted?")

    def run_episode(self, timeout: float = 60.0, reset: bool = True, settle_s: float = 0.5) -> dict[str, Any]:
        """Reset (after `settle_s`, so that decisions still in flight for the last episode are void), then wait."""
        if reset:
            time.sleep(settle_s)
        start = self.reset() if reset else dict(self.status)
        episode = start["episode"]
        n_lat, n_dec, n_rank = len(self.latency_ms), len(self.decision_ms), len(self.rank_stages)
        ok = self.wait_for(lambda s: s.get("episode") == episode and s.get("done"), timeout)
        with self.cond:
            s = dict(self.status)
            lat, dec, rank = self.latency_ms[n_lat:], self.decision_ms[n_dec:], self.rank_stages[n_rank:]
            vla = {k: v for k, v in self.node_values.get("vla_node", {}).items() if k.endswith("_ms_p50")}
        return {"episode": episode, "seed": s.get("seed"), "instruction": s.get("instruction"),
                "success": bool(ok and s.get("success")), "event": s.get("event") if ok else "client_timeout",
                "steps": s.get("step"), "progress": s.get("progress"), "start_progress": start.get("progress"),
                "latency_ms": lat, "decision_ms": dec, "rank_stages": rank, "vla_stage_ms": vla}


def spin_in_thread(node: Node) -> tuple[SingleThreadedExecutor, threading.Thread]:
    ex = SingleThreadedExecutor(context=node.context)  # see node_common/worker.py
    ex.add_node(node)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    return ex, thread


def main(argv: list[str] | None = None) -> int:
    exit_with_parent(signal.SIGKILL)  # a client blocked in a wait would outlive a killed demo on SIGTERM
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robot", default="arm")
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per episode")
    ap.add_argument("--out", default=None, help="JSON file for the per-episode results")
    ap.add_argument("--use-sim-time", action="store_true", help="stamps and latencies in the sim's /clock time")
    first = ap.add_mutually_exclusive_group()
    first.add_argument("--first-autostarted", action="store_true",
                       help="the first episode is the one the sim started itself (no reset before it)")
    first.add_argument("--warm-up", action="store_true",
                       help="the sim's autostarted episode warms the stack up and is not counted: once a command "
                            "computed from an observation arrives here, the first counted episode starts with a reset")
    args = ap.parse_args(argv)
    rclpy.init()
    node = EpisodeClient(args.robot, use_sim_time=args.use_sim_time)
    ex, thread = spin_in_thread(node)
    results = []
    try:
        if (args.first_autostarted or args.warm_up) and not node.wait_for(lambda s: s.get("episode") == 0, 120):
            raise TimeoutError("the sim did not start its first episode")
        if args.warm_up:
            node.warm_up(120.0)
        for i in range(args.episodes):
            r = node.run_episode(args.timeout, reset=not (args.first_autostarted and i == 0))
            results.append(r)
            print(f"[episode {r['episode']}] seed {r['seed']} {r['instruction']!r}: "
                  f"{'success' if r['success'] else r['event']} after {r['steps']} steps", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        ex.shutdown()
        thread.join(5)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
