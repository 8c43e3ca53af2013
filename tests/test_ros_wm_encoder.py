"""world_model_node with a world model in another policy's latent (`wm_encoder`), over real rclpy / Fast DDS: it
ranks in ActionCandidates.wm_latent with the encoder's action normalisation (the same scores as the world model
computed here), and it rejects candidates whose latent does not fit its configuration (no wm_latent, one of the
wrong size; a wm_latent sent to a node without an encoder) instead of ranking in the wrong latent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from wm_vla_interfaces.msg import ActionCandidates, RankingResult

from node_common.msgs import COMMAND_QOS, f32, from_ns, to_ns
from ros_stack_helpers import Probe
from runtime_helpers import tiny_models
from wm_vla.bringup import NodeSpec
from wm_vla.launcher import Stack
from wm_vla.models.checkpoint import save_checkpoint, weights_digest
from wm_vla.robots import load_profile
from wm_vla.runtime.backends.torch_backend import TorchBackend
from wm_vla.runtime.ranker import KinematicPenalty, RankerConfig, score_candidates

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
NAMES = list(ARM.action.names)
HOME = np.array([0.0, -0.5, 1.2, 0.0, 0.9, 0.0, 0.0])
K = 4


class Rig:
    def __init__(self, probe: Probe, stack: Stack, models: dict[str, Path], horizon: int, latent: int) -> None:
        n = probe.node
        self.probe, self.stack, self.models, self.h, self.latent = probe, stack, models, horizon, latent
        self.pubs = {name: n.create_publisher(ActionCandidates, f"/test/{name}/candidates", COMMAND_QOS)
                     for name in ("with_encoder", "without_encoder")}
        self.rankings = {name: probe.record(RankingResult, f"/test/{name}/ranking", COMMAND_QOS) for name in self.pubs}
        self.diag = probe.record(DiagnosticArray, "/diagnostics", 100)
        self.rng = np.random.default_rng(0)

    def send(self, node: str, wm_latent: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
        now = self.probe.node.get_clock().now().nanoseconds
        actions = HOME + 0.05 * self.rng.standard_normal((K, self.h, len(NAMES)))
        obs_latent = self.rng.standard_normal(self.latent).astype(np.float32)
        msg = ActionCandidates(k=K, h=self.h, a=len(NAMES), action_names=NAMES, actions=f32(actions),
                               obs_latent=f32(obs_latent), latent_dim=self.latent,
                               wm_latent=f32(wm_latent if wm_latent is not None else np.zeros(0)))
        msg.header.stamp = from_ns(now)
        self.pubs[node].publish(msg)
        return now, actions, obs_latent

    def ranking(self, node: str, stamp: int, timeout: float) -> RankingResult | None:
        def found() -> RankingResult | None:
            return next((m for _, m in self.rankings[node].since(0.0) if to_ns(m.header.stamp) == stamp), None)

        try:
            self.probe.wait(lambda: found() is not None, timeout, "the RankingResult")
        except TimeoutError:
            return None
        return found()

    def rejected(self, node: str) -> list[str]:
        return [st.message for _, m in self.diag.since(0.0) for st in m.status
                if st.name.endswith(node) and "candidates rejected" in st.message]


@pytest.fixture(scope="module")
def rig(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("ros_wm_encoder")
    policy, _ = tiny_models(0)
    encoder, wm = tiny_models(5, film=True)
    save_checkpoint(policy, root / "policy")
    save_checkpoint(encoder, root / "encoder")
    save_checkpoint(wm, root / "wm", extra={"encoder_digest": weights_digest(root / "encoder")})
    save_checkpoint(wm, root / "wm_own")  # a world model in the acting policy's latent (nothing recorded)
    models = {"policy": root / "policy", "encoder": root / "encoder", "wm": root / "wm"}
    common = {"robot": "arm", "rank": True, "policy": str(root / "policy"), "max_obs_age_ms": 1e6}
    plan = [NodeSpec(name, "world_model_node", "world_model_node.node",
                     {**common, **params, "candidates": f"/test/{name}/candidates",
                      "ranking": f"/test/{name}/ranking"}, lifecycle=True)
            for name, params in (("with_encoder", {"world_model": str(root / "wm"), "wm_encoder": str(root / "encoder")}),
                                 ("without_encoder", {"world_model": str(root / "wm_own"), "wm_encoder": "none"}))]
    with Stack(plan, log_dir=root / "logs") as stack:
        probe = Probe()
        r = Rig(probe, stack, models, policy.cfg.horizon, policy.cfg.latent_dim)
        try:
            probe.wait(lambda: all(p.get_subscription_count() > 0 for p in r.pubs.values()) or bool(stack.failed()),
                       90, "both world_model_nodes")
            assert not stack.failed(), [stack.log(n) for n in stack.failed()]
            yield r
        finally:
            probe.close()


def test_the_node_ranks_in_the_wm_latent_with_the_encoders_normalisation(rig: Rig) -> None:
    ranker = TorchBackend.from_checkpoints(rig.models["encoder"], rig.models["wm"])
    wm_latent = rig.rng.standard_normal(rig.latent).astype(np.float32)
    stamp, actions, obs_latent = rig.send("with_encoder", wm_latent)
    result = rig.ranking("with_encoder", stamp, 30.0)
    assert result is not None and result.ranker == "gpc_rank" and len(result.scores) == K
    roll = ranker.rollout(wm_latent, actions.astype(np.float32))
    want = score_candidates(roll.progress, roll.failure_prob, actions, KinematicPenalty(ARM), RankerConfig())
    np.testing.assert_allclose(np.asarray(result.scores), want.scores, atol=1e-4)
    assert result.chosen == want.chosen
    in_obs_latent = ranker.rollout(obs_latent, actions.astype(np.float32))  # what ranking in obs_latent would give
    assert np.abs(in_obs_latent.progress - roll.progress).max() > 1e-4


@pytest.mark.parametrize("node, wm_latent, reason", [
    ("with_encoder", None, "carry no wm_latent"),
    ("with_encoder", np.ones(3, np.float32), "wm_latent has 3 values"),
    ("without_encoder", np.ones(16, np.float32), "give both nodes the same wm_encoder")])
def test_candidates_in_the_wrong_latent_are_rejected_not_ranked(rig: Rig, node: str, wm_latent: np.ndarray | None,
                                                               reason: str) -> None:
    stamp, _, _ = rig.send(node, wm_latent)
    rig.probe.wait(lambda: any(reason in m for m in rig.rejected(node)), 20.0, f"the rejection on {node}")
    assert rig.ranking(node, stamp, 1.0) is None, "no ranking of candidates in the wrong latent"
    ok_latent = np.ones(rig.latent, np.float32) if node == "with_encoder" else None
    stamp, _, _ = rig.send(node, ok_latent)  # and the node keeps working
    assert rig.ranking(node, stamp, 20.0) is not None
