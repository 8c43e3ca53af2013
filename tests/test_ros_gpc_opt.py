"""GPC-OPT in world_model_node over real rclpy / Fast DDS: the node (torch backend, the shipped tiny checkpoints) ranks
two candidates, refines the chosen one through the student world model, and streams it through the safety filter;
its latency budget gains the GPC-OPT rungs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from wm_vla_interfaces.msg import ActionCandidates, RankingResult

from node_common.budget import BUDGET_PARAMETERS, NodeBudget
from node_common.diagnostics import Diagnostics
from node_common.msgs import f32, from_ns, to_ns
from sim_node.episodes import lineage_ns
from test_ros_safety import ARM, HOME, NAMES, Rig, running_rig
from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.runtime.latency.governor import ladder
from wm_vla.training.pipeline import default_checkpoints, default_wm_encoder

pytestmark = pytest.mark.ros
TRUST = 0.5
LIMITS = ARM.load_model().joint_limits(ARM.action.names)


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    params = {"rank": True, "backend": "torch", "gpc_opt": True, "gpc_opt_budget_ms": 50.0, "gpc_opt_steps": 5,
              "gpc_opt_trust": TRUST}
    with running_rig(params, tmp_path_factory.mktemp("wm_gpc_opt"), timeout=120.0) as r:
        yield r


def test_gpc_opt_refines_the_chosen_chunk_within_the_trust_region_and_the_limits(rig: Rig) -> None:
    encoder = default_wm_encoder()  # the shipped world model ranks (and normalises chunks) in this policy's latent
    policy = load_checkpoint(encoder or default_checkpoints()[0], expect="policy")[0]
    horizon, latent_dim = policy.cfg.horizon, policy.cfg.latent_dim
    std = policy.action_std.numpy().astype(float)
    chunk = np.tile(HOME, (horizon, 1))  # the robot stays where it is: any motion is the refinement

    def decide() -> tuple[int, RankingResult]:
        rig.fresh_task()
        now = rig.probe.node.get_clock().now().nanoseconds
        z = f32(np.random.default_rng(0).normal(size=latent_dim))
        msg = ActionCandidates(k=2, h=horizon, a=len(NAMES), action_names=NAMES, actions=f32(np.stack([chunk, chunk])),
                               latent_dim=latent_dim, obs_latent=z, wm_latent=z if encoder else f32(np.zeros(0)))
        msg.header.stamp = from_ns(now)
        rig.cand_pub.publish(msg)
        rig.probe.wait(lambda: any(to_ns(m.header.stamp) == now for _, m in rig.rankings.since(0.0)), 30.0,
                       "the ranking")
        return now, next(m for _, m in rig.rankings.since(0.0) if to_ns(m.header.stamp) == now)

    decide()  # the first world-model rollout of the process is slow (allocations): its chunk may expire unexecuted
    now, result = decide()
    stages = dict(zip(result.stage_names, result.stage_ms))
    assert result.ranker == "gpc_opt" and result.backend == "torch" and not result.degraded
    assert {"wm_rollout", "score", "gpc_opt"} <= set(stages) and stages["gpc_opt"] > 0.0
    time.sleep(0.5)
    arm = np.array([m.data for _, m in rig.forward.since(0.0) if lineage_ns(m) == now])
    grip = np.array([m.data[0] for _, m in rig.gripper.since(0.0) if lineage_ns(m) == now])
    assert len(arm) > 5 and len(grip) > 5, f"the refined chunk was streamed with the observation stamp ({stages})"
    q = np.concatenate([arm, grip[: len(arm), None]], axis=1)[: len(grip)]
    assert np.all(np.isfinite(q)) and np.all(q >= LIMITS.lower - 1e-9) and np.all(q <= LIMITS.upper + 1e-9)
    # trust region: every executed value within TRUST action standard deviations of the raw chosen chunk
    assert np.all(np.abs(q - HOME) <= TRUST * std + 1e-6), (np.abs(q - HOME).max(0), TRUST * std)
    assert np.abs(q - HOME).max() > 1e-4, "the executed chunk is the refined one, not the raw candidate"


def test_node_budget_with_gpc_opt_drops_it_before_the_world_model(ros_domain: int) -> None:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("budget_probe", context=ctx)
    try:
        node.declare_parameters("", [*BUDGET_PARAMETERS])
        node.set_parameters([Parameter("budget_ms", value=80.0)])
        budget = NodeBudget.from_node(node, Diagnostics(node), gpc_opt=True)
        assert budget is not None and budget.mode.name == "K=16 +GPC-OPT"
        assert [m.name for m in ladder(budget.governor.cfg)] == [
            "K=16 +GPC-OPT", "K=8 +GPC-OPT", "K=4 +GPC-OPT", "K=4", "passthrough"]
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
