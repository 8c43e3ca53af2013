"""GPC-RANK: score K candidate chunks with the (student) world model in one batched call and pick the best.

score = w_p * progress - w_f * P(failure) - kinematic penalties (+ w_g * cos(z_pred, goal) when a goal exists).
Kinematic penalties: URDF joint-limit excess and TCP workspace excess (batched forward kinematics) for arms;
velocity-limit excess for body-velocity robots. GPC-OPT optionally refines the chosen chunk by gradient steps
through the world model, inside a time budget and a trust region.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from wm_vla.models.world_model import AnyWorldModel, LatentWorldModel, WorldModelEnsemble
from wm_vla.robots import Kinematics, RobotProfile
from wm_vla.runtime.errors import RankerError

# the margin every default path ranks with (eval sim, bag eval, world_model_node): scores are progress - P(failure)
# - penalties, so 0.1 asks for a tenth of a task's progress or failure probability before leaving the policy's own
# first sample (issue #3's headline was measured with it)
DEFAULT_SWITCH_MARGIN = 0.1


@dataclass
class RankerConfig:
    progress_weight: float = 1.0
    failure_weight: float = 1.0
    limit_weight: float = 10.0      # per radian (or metre) beyond a joint limit, summed over checked steps
    workspace_weight: float = 10.0  # per metre the TCP leaves the workspace box, summed over checked steps
    goal_weight: float = 0.0
    kinematic_stride: int = 4       # check every n-th action of a chunk
    switch_margin: float = DEFAULT_SWITCH_MARGIN  # keep the policy's first sample unless another scores at least this much higher
    # with an ensemble world model: subtract this times the members' standard deviation of each candidate's score
    # (pessimism where the members disagree); 0: rank by the mean alone
    disagreement_weight: float = 0.0


@dataclass
class Ranking:
    chosen: int
    scores: np.ndarray
    progress: np.ndarray
    failure_prob: np.ndarray
    penalty: np.ndarray
    stage_ms: dict[str, float] = field(default_factory=dict)
    ranker: str = "gpc_rank"


class KinematicPenalty:
    """Penalties computed from the robot profile and URDF: limits (and workspace, for arms)."""

    def __init__(self, profile: RobotProfile, stride: int = 4) -> None:
        self.profile, self.stride = profile, max(1, stride)
        self.low = np.asarray(profile.action.low, float)
        self.high = np.asarray(profile.action.high, float)
        self.kin: Kinematics | None = None
        if profile.action.kind == "joint_position" and profile.workspace is not None and profile.tool_link:
            self.kin = Kinematics(profile.load_model())
            self.arm_cols = [profile.action.names.index(j) for j in profile.arm_joints]
            self.ws_low = np.asarray(profile.workspace.low, float)
            self.ws_high = np.asarray(profile.workspace.high, float)

    def __call__(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(limit excess, workspace excess) per candidate, for raw chunks (K, H, A)."""
        steps = chunks[:, :: self.stride]
        limit = (np.clip(steps - self.high, 0, None) + np.clip(self.low - steps, 0, None)).sum(axis=(1, 2))
        workspace = np.zeros(len(chunks))
        if self.kin is not None:
            q = steps[..., self.arm_cols].reshape(-1, len(self.arm_cols))
            tcp = self.kin.link_positions_batch(q, self.profile.arm_joints, self.profile.tool_link)
            excess = np.clip(tcp - self.ws_high, 0, None) + np.clip(self.ws_low - tcp, 0, None)
            workspace = excess.sum(-1).reshape(steps.shape[0], steps.shape[1]).sum(1)
        return limit, workspace


def score_candidates(progress: np.ndarray, failure_prob: np.ndarray, chunks: np.ndarray,
                     penalty: KinematicPenalty | None, cfg: RankerConfig, goal_similarity: np.ndarray | None = None,
                     disagreement: np.ndarray | None = None) -> Ranking:
    """The GPC-RANK score and choice from world-model outputs (any backend) for raw chunks (K, H, A); `disagreement`
    is an ensemble's per-candidate spread of scores (weighted by `cfg.disagreement_weight`)."""
    score = cfg.progress_weight * progress - cfg.failure_weight * failure_prob
    if disagreement is not None and cfg.disagreement_weight:
        score = score - cfg.disagreement_weight * disagreement
    if goal_similarity is not None and cfg.goal_weight:
        score = score + cfg.goal_weight * goal_similarity
    pen = np.zeros(len(chunks))
    if penalty is not None:
        limit, workspace = penalty(chunks)
        pen = cfg.limit_weight * limit + cfg.workspace_weight * workspace
    scores = np.asarray(score, dtype=np.float64) - pen
    best = int(np.argmax(scores))
    chosen = best if scores[best] - scores[0] > cfg.switch_margin else 0
    return Ranking(chosen, scores, np.asarray(progress), np.asarray(failure_prob), pen)


class GpcRanker:
    """Ranks candidate chunks of one observation with a latent world model (or an ensemble of them)."""

    def __init__(self, world_model: AnyWorldModel, action_mean: torch.Tensor, action_std: torch.Tensor,
                 penalty: KinematicPenalty | None = None, config: RankerConfig | None = None) -> None:
        self.wm = world_model.eval()
        self.mean, self.std = action_mean, action_std
        self.penalty, self.cfg = penalty, config or RankerConfig()

    def _check(self, z: torch.Tensor, chunks: torch.Tensor) -> None:
        c = self.wm.cfg
        if z.shape != (c.latent_dim,):
            raise RankerError(f"latent must have shape ({c.latent_dim},), got {tuple(z.shape)}")
        if chunks.dim() != 3 or chunks.shape[1:] != (c.horizon, c.action_dim) or chunks.shape[0] < 1:
            raise RankerError(f"candidates must be (K, {c.horizon}, {c.action_dim}), got {tuple(chunks.shape)}")
        if not torch.isfinite(chunks).all() or not torch.isfinite(z).all():
            raise RankerError("candidates or latent contain NaN/inf")

    @torch.no_grad()
    def rank(self, z: torch.Tensor, chunks: torch.Tensor, goal: torch.Tensor | None = None) -> Ranking:
        """Score K raw-unit candidates (K, H, A) for observation latent z (latent_dim,)."""
        self._check(z, chunks)
        t0 = time.perf_counter()
        zk, chunks_n = z.expand(chunks.shape[0], -1), (chunks - self.mean) / self.std
        disagreement = None
        if isinstance(self.wm, WorldModelEnsemble) and self.cfg.disagreement_weight:
            members = self.wm.member_outputs(zk, chunks_n)
            out = WorldModelEnsemble.combine(members)
            c = self.cfg
            scores = torch.stack([c.progress_weight * m.progress - c.failure_weight * m.failure_prob for m in members])
            disagreement = scores.std(0, unbiased=False).cpu().numpy()
        else:
            out = self.wm(zk, chunks_n)
        t1 = time.perf_counter()
        goal_sim = None
        if goal is not None and self.cfg.goal_weight:
            goal_sim = torch.nn.functional.cosine_similarity(out.next_latent, goal[None], dim=-1).cpu().numpy()
        ranking = score_candidates(out.progress.cpu().numpy(), out.failure_prob.cpu().numpy(), chunks.cpu().numpy(),
                                   self.penalty, self.cfg, goal_sim, disagreement)
        ranking.stage_ms = {"wm_rollout": 1e3 * (t1 - t0), "score": 1e3 * (time.perf_counter() - t1)}
        return ranking

    def optimize(self, z: torch.Tensor, chunk: torch.Tensor, budget_ms: float = 10.0, max_steps: int = 20,
                 lr: float = 0.05, trust: float = 0.5) -> tuple[torch.Tensor, int]:
        """GPC-OPT: gradient ascent on the WM score w.r.t. the (normalised) chunk, within budget and trust region.

        Returns the refined raw chunk and the number of steps taken.
        """
        self._check(z, chunk[None])
        start = (chunk[None] - self.mean) / self.std
        x = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        deadline = time.perf_counter() + budget_ms / 1e3
        steps = 0
        while steps < max_steps and time.perf_counter() < deadline:
            out = self.wm(z[None], x)
            loss = -(self.cfg.progress_weight * out.progress - self.cfg.failure_weight * out.failure_prob).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(start + (x - start).clamp(-trust, trust))
            steps += 1
        return (x.detach() * self.std + self.mean)[0], steps


GRADIENT_BACKENDS = ("torch",)  # backends whose world model gives gradients (onnxruntime / TensorRT do not)


class ChunkRefiner:
    """GPC-OPT for numpy callers (world_model_node): refines one raw chunk (H, A) through the torch backend's student
    world model within `budget_ms` (at least one step), at most `max_steps` Adam steps of `lr`, and a trust region of
    `trust` action standard deviations per value around the chunk. RankerError for a backend without gradients."""

    def __init__(self, backend: object, config: RankerConfig | None = None, budget_ms: float = 10.0,
                 max_steps: int = 20, lr: float = 0.05, trust: float = 0.5) -> None:
        name = getattr(backend, "name", type(backend).__name__)
        wm, policy = getattr(backend, "wm", None), getattr(backend, "policy", None)
        if name not in GRADIENT_BACKENDS or not isinstance(wm, LatentWorldModel) or policy is None:
            raise RankerError(f"GPC-OPT needs gradients through the world model: backend {list(GRADIENT_BACKENDS)} "
                              f"with a world model, not {name!r}")
        if not (budget_ms > 0 and max_steps >= 1 and lr > 0 and trust > 0):
            raise RankerError(f"GPC-OPT needs budget_ms > 0, max_steps >= 1, lr > 0 and trust > 0, got "
                              f"{budget_ms}, {max_steps}, {lr}, {trust}")
        wm.requires_grad_(False)  # gradients w.r.t. the chunk only
        self.device = policy.action_mean.device
        self.ranker = GpcRanker(wm, policy.action_mean, policy.action_std, None, config)
        self.budget_ms, self.max_steps, self.lr, self.trust = budget_ms, max_steps, lr, trust

    def warm_up(self) -> None:
        """One step on zeros: autograd's first-call set-up happens here, not in the first decision."""
        c = self.ranker.wm.cfg
        self.ranker.optimize(torch.zeros(c.latent_dim, device=self.device),
                             torch.zeros(c.horizon, c.action_dim, device=self.device), self.budget_ms, 1, self.lr,
                             self.trust)

    def __call__(self, obs_latent: np.ndarray, chunk: np.ndarray) -> tuple[np.ndarray, int]:
        """The refined chunk (same shape and dtype) and the number of steps taken."""
        z = torch.as_tensor(obs_latent, dtype=torch.float32, device=self.device)
        x = torch.as_tensor(chunk, dtype=torch.float32, device=self.device)
        refined, steps = self.ranker.optimize(z, x, self.budget_ms, self.max_steps, self.lr, self.trust)
        return refined.cpu().numpy().astype(chunk.dtype), steps


def passthrough(k: int) -> Ranking:
    """No healthy world model in budget: execute the policy's first sample."""
    zeros = np.zeros(k)
    return Ranking(0, zeros, zeros, zeros, zeros, {}, ranker="passthrough")
