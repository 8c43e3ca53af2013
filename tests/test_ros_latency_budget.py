"""Live latency budget (issue #8) over real rclpy / Fast DDS: world_model_node ranks real candidates with the shipped
student; a delay injected into its world-model stage (the `inject_wm_delay_ms` parameter, set at run time) pushes
the ranking p99 over `budget_ms`, and the node degrades K 16 -> 8 -> 4 -> passthrough, then recovers step by step
once the delay is removed. Every change is logged and on /diagnostics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import JointState
from wm_vla_interfaces.msg import ActionCandidates, RankingResult

from node_common.msgs import COMMAND_QOS, SENSOR_QOS, f32, from_ns, to_ns
from ros_stack_helpers import Feeder, Probe
from wm_vla.bringup import NodeSpec
from wm_vla.launcher import Stack
from wm_vla.robots import load_profile
from wm_vla.training.pipeline import default_checkpoints

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
NAMES = list(ARM.action.names)
HOME = np.array([0.0, -0.5, 1.2, 0.0, 0.9, 0.0, 0.0])
K, H, LATENT = 16, 16, 128
BUDGET_MS = 150.0


class Rig:
    def __init__(self, probe: Probe, stack: Stack) -> None:
        n = probe.node
        self.probe, self.stack = probe, stack
        self.js_pub = n.create_publisher(JointState, ARM.topics.joint_states, SENSOR_QOS)
        self.cand_pub = n.create_publisher(ActionCandidates, "/wm_vla/action_candidates", COMMAND_QOS)
        self.rankings = probe.record(RankingResult, "/wm_vla/ranking_result", COMMAND_QOS)
        self.diag = probe.record(DiagnosticArray, "/diagnostics", 10)
        self.params = n.create_client(SetParameters, "/world_model_node/set_parameters")
        self.rng = np.random.default_rng(0)
        self.feeder = Feeder(self._joint_state, 50.0)

    def _joint_state(self) -> None:
        js = JointState(name=NAMES, position=[float(v) for v in HOME])
        js.header.stamp = self.probe.node.get_clock().now().to_msg()
        self.js_pub.publish(js)

    def decide(self) -> int:
        """Send K candidates near HOME and wait for their RankingResult: the number of candidates the world model
        ranked (1 = passed through)."""
        now = self.probe.node.get_clock().now().nanoseconds
        actions = HOME + 0.05 * self.rng.standard_normal((K, H, len(NAMES)))
        msg = ActionCandidates(k=K, h=H, a=len(NAMES), action_names=NAMES, actions=f32(actions),
                               obs_latent=f32(self.rng.standard_normal(LATENT)), latent_dim=LATENT)
        msg.header.stamp = from_ns(now)
        self.cand_pub.publish(msg)
        self.probe.wait(lambda: any(to_ns(m.header.stamp) == now for _, m in self.rankings.since(0.0)), 20.0,
                        "the RankingResult")
        r = next(m for _, m in self.rankings.since(0.0) if to_ns(m.header.stamp) == now)
        return 1 if r.ranker == "passthrough" else len(r.scores)

    def set_delay(self, ms: float) -> None:
        assert self.params.wait_for_service(timeout_sec=10.0)
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(ms))
        future = self.params.call_async(SetParameters.Request(parameters=[Parameter(name="inject_wm_delay_ms",
                                                                                     value=value)]))
        self.probe.wait(future.done, 10.0, "set_parameters")
        assert all(r.successful for r in future.result().results)

    def budget_value(self, key: str) -> str | None:
        """The newest value of `key` on world_model_node's /diagnostics."""
        values = [kv.value for _, m in self.diag.since(0.0) for st in m.status if st.name.endswith("world_model_node")
                  for kv in st.values if kv.key == key]
        return values[-1] if values else None


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    policy, wm = (str(p) for p in default_checkpoints())
    spec = NodeSpec("world_model_node", "world_model_node", "world_model_node.node",
                    {"robot": "arm", "rank": True, "policy": policy, "world_model": wm, "budget_ms": BUDGET_MS,
                     "budget_k_levels": [16, 8, 4], "budget_window": 4, "budget_min_samples": 2, "budget_dwell": 2,
                     "max_obs_age_ms": 1e6})
    logs = tmp_path_factory.mktemp("budget")
    with Stack([spec], log_dir=logs) as stack:
        probe = Probe()
        rig = Rig(probe, stack)
        try:
            probe.wait(lambda: rig.cand_pub.get_subscription_count() > 0 or bool(stack.failed()), 60, "world_model_node")
            assert not stack.failed(), stack.log("world_model_node")
            yield rig
        finally:
            rig.feeder.stop()
            probe.close()


def dedupe(seq: list[int]) -> list[int]:
    return [v for i, v in enumerate(seq) if i == 0 or v != seq[i - 1]]


def test_injected_wm_delay_degrades_k_then_passes_through_and_recovers(rig: Rig) -> None:
    assert [rig.decide() for _ in range(3)] == [K] * 3          # within budget: all 16 candidates are ranked
    rig.set_delay(2 * BUDGET_MS)                                # the WM stage alone is now twice the budget
    degraded = [rig.decide() for _ in range(12)]
    assert dedupe(degraded)[:4] == [16, 8, 4, 1], degraded      # shrink K in order, then skip the world model
    # passthrough measures no WM time, so the governor probes K=4 again; with the delay still there it falls back
    assert set(degraded[degraded.index(1):]) <= {1, 4}, degraded
    rig.set_delay(0.0)
    recovered = [rig.decide() for _ in range(30)]
    assert dedupe(recovered)[-3:] == [4, 8, 16] and recovered[-1] == K, recovered  # one level at a time
    log = rig.stack.log("world_model_node")
    for change in ("degrade K=16 -> K=8", "degrade K=8 -> K=4", "degrade K=4 -> passthrough",
                   "recover passthrough -> K=4", "recover K=4 -> K=8", "recover K=8 -> K=16"):
        assert f"latency budget: {change}" in log, log[-3000:]
    rig.probe.wait(lambda: "recover K=8 -> K=16" in (rig.budget_value("budget_last_change") or ""), 5.0,
                   "the last budget change on /diagnostics")
    assert rig.budget_value("budget_mode") == "K=16" and int(rig.budget_value("budget_changes") or 0) >= 6


def test_bad_budget_settings_refuse_to_configure(ros_domain: int, tmp_path: Path) -> None:
    spec = NodeSpec("world_model_node", "world_model_node", "world_model_node.node",
                    {"robot": "arm", "rank": False, "budget_ms": 100.0, "budget_k_levels": [4, 16]})
    with Stack([spec], log_dir=tmp_path) as stack:
        proc = stack.procs["world_model_node"]
        proc.wait(60)
        assert proc.returncode != 0
        assert "bad latency budget settings: k_levels must be distinct integers >= 1, largest first" in \
            stack.log("world_model_node")
