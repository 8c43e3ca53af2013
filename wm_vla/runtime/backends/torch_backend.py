"""The reference backend: the trained torch modules themselves (eager on CPU; CUDA graphs per K on a GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint
from wm_vla.models.errors import CheckpointError
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.runtime.backends.base import Backend, Candidates, Encoded, Rollout
from wm_vla.runtime.errors import BackendUnavailableError
from wm_vla.runtime.spec import ModelSpec


class _GraphedSampler:
    """`FlarePolicy.sample_from_context` for one K captured as a CUDA graph (static input/output buffers)."""

    def __init__(self, policy: FlarePolicy, steps: int, context: torch.Tensor, mask: torch.Tensor,
                 state_n: torch.Tensor, k: int) -> None:
        c = policy.cfg
        self.inputs = (context.clone(), mask.clone(), state_n.clone(),
                       torch.zeros(k, c.horizon, c.action_dim, device=context.device))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up kernels and allocator before capture
                policy.sample_from_context(*self.inputs, steps)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = policy.sample_from_context(*self.inputs, steps)

    def __call__(self, context: torch.Tensor, mask: torch.Tensor, state_n: torch.Tensor, noise: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        for buf, value in zip(self.inputs, (context, mask, state_n, noise)):
            buf.copy_(value)
        self.graph.replay()
        return self.outputs[0].clone(), self.outputs[1].clone()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, policy: FlarePolicy, world_model: LatentWorldModel | None = None, device: str = "cpu",
                 steps: int | None = None, cuda_graphs: bool = True) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("torch backend on cuda requested but torch sees no CUDA device")
        self.torch_device = torch.device(device)
        self.policy = policy.eval().to(self.torch_device)
        self.wm = world_model.eval().to(self.torch_device) if world_model is not None else None
        if self.wm is not None:
            w, c = self.wm.cfg, policy.cfg
            if (w.latent_dim, w.horizon, w.action_dim) != (c.latent_dim, c.horizon, c.action_dim):
                raise CheckpointError("the world model does not fit the policy (latent size, horizon or action size)")
        self.steps = int(steps or policy.cfg.denoise_steps)
        self.use_graphs = cuda_graphs and self.torch_device.type == "cuda"
        self._graphs: dict[int, _GraphedSampler] = {}
        spec = ModelSpec.from_policy_config(policy.cfg, self.steps, world_model is not None)
        super().__init__(spec, str(self.torch_device))

    @classmethod
    def from_checkpoints(cls, policy_dir: Path | str, wm_dir: Path | str | None = None, device: str = "cpu",
                         steps: int | None = None) -> TorchBackend:
        policy, _, _ = load_checkpoint(Path(policy_dir), expect="policy")
        if wm_dir is not None:  # it ranks in the latent of the policy it was trained with: that one only
            check_world_model_encoder(wm_dir, policy_dir)
        wm = load_checkpoint(Path(wm_dir), expect="world_model")[0] if wm_dir is not None else None
        assert isinstance(policy, FlarePolicy) and (wm is None or isinstance(wm, LatentWorldModel))
        return cls(policy, wm, device, steps)

    def describe(self) -> str:
        mode = "CUDA graphs" if self.use_graphs else "eager"
        return f"torch {torch.__version__} ({mode}) on {self.device}"

    @torch.no_grad()
    def _encode(self, images: np.ndarray, state: np.ndarray, instruction: str) -> Encoded:
        dev = self.torch_device
        obs = ObsBatch(torch.from_numpy(images).to(dev), torch.from_numpy(state).to(dev), [instruction])
        context, mask, z = self.policy.encode(obs)
        return Encoded(z[0].cpu().numpy(), state, (context, mask, self.policy.norm_state(obs.state)))

    @torch.no_grad()
    def _sample(self, encoded: Encoded, noise: np.ndarray) -> Candidates:
        context, mask, state_n = encoded.handle
        x = torch.from_numpy(noise).to(self.torch_device)
        if self.use_graphs:
            k = x.shape[0]
            if k not in self._graphs:
                self._graphs[k] = _GraphedSampler(self.policy, self.steps, context, mask, state_n, k)
            actions, future = self._graphs[k](context, mask, state_n, x)
        else:
            actions, future = self.policy.sample_from_context(context, mask, state_n, x, self.steps)
        return Candidates(actions.cpu().numpy(), future.cpu().numpy(), actions)

    @torch.no_grad()
    def _rollout(self, obs_latent: np.ndarray, actions: np.ndarray, handle: Any) -> Rollout:
        assert self.wm is not None
        dev = self.torch_device
        chunks = handle if isinstance(handle, torch.Tensor) else torch.from_numpy(actions).to(dev)
        z = torch.from_numpy(obs_latent).to(dev).expand(chunks.shape[0], -1)
        out = self.wm(z, self.policy.norm_action(chunks))
        return Rollout(out.next_latent.cpu().numpy(), out.progress.cpu().numpy(), out.failure_prob.cpu().numpy())
