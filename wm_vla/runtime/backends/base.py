"""The one Backend interface: encode an observation once, sample K chunks from given noise, roll the world model.

Every backend takes and returns numpy arrays (raw action units) and checks its inputs against the model spec,
raising `InputShapeError` before any kernel runs. Backend-private device copies travel in `handle` fields, so a
GPU backend can chain encoder -> sampler -> world model without host round trips.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_vla.cpus import usable_cpus
from wm_vla.runtime.errors import BackendUnavailableError, InputShapeError
from wm_vla.runtime.spec import ModelSpec


@dataclass
class Encoded:
    """One encoded observation: latent z (latent_dim,), the raw state (1, S) and the backend's context handle."""

    obs_latent: np.ndarray
    state: np.ndarray
    handle: Any = None
    owner: int = 0  # id() of the backend that encoded it: handles are only valid there


@dataclass
class Candidates:
    """K sampled chunks (K, H, A) in raw units and their FLARE future latents (K, M, latent_dim)."""

    actions: np.ndarray
    future_latents: np.ndarray
    handle: Any = None


@dataclass
class Rollout:
    """World-model predictions per candidate."""

    next_latent: np.ndarray   # (K, latent_dim)
    progress: np.ndarray      # (K,)
    failure_prob: np.ndarray  # (K,)


def default_threads() -> int:
    """Intra-op threads: OMP_NUM_THREADS when set (torch honours it too), else the cores this process may use
    (affinity mask and cgroup CPU quota: a `--cpus=2` container on a big host gets 2)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return usable_cpus()


class Backend(ABC):
    """Common behaviour; subclasses implement `_encode`, `_sample`, `_rollout`."""

    name: str = "backend"

    def __init__(self, spec: ModelSpec, device: str, k_max: int | None = None) -> None:
        self.spec, self.device, self.k_max = spec, device, k_max

    def encode(self, images: np.ndarray, state: np.ndarray, instruction: str) -> Encoded:
        """One observation: images (1, cams, 3, S, S) float in [0, 1], raw state (1, state_dim), instruction."""
        images, state = self.spec.check_observation(images, state)
        encoded = self._encode(images, state, instruction)
        encoded.owner = id(self)
        return encoded

    def sample(self, encoded: Encoded, noise: np.ndarray) -> Candidates:
        """K chunks from the given noise (K, H, A): candidate i depends only on noise[i] and the observation."""
        if encoded.owner != id(self):
            raise InputShapeError(f"this observation was encoded by another backend; encode it with {self.describe()}")
        return self._sample(encoded, self.spec.check_noise(noise, self.k_max))

    def rollout(self, obs_latent: np.ndarray, candidates: Candidates | np.ndarray) -> Rollout:
        """World-model predictions for raw chunks (K, H, A) from latent z (latent_dim,)."""
        if not self.spec.has_world_model:
            raise BackendUnavailableError(f"the {self.name} backend was created without a world model")
        actions = candidates.actions if isinstance(candidates, Candidates) else candidates
        z, actions = self.spec.check_candidates(obs_latent, actions)
        if self.k_max is not None and actions.shape[0] > self.k_max:
            raise InputShapeError(f"K={actions.shape[0]} exceeds this backend's maximum K={self.k_max}")
        handle = candidates.handle if isinstance(candidates, Candidates) else None
        return self._rollout(z, actions, handle)

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def close(self) -> None:
        """Release sessions, engines and device memory."""

    @abstractmethod
    def _encode(self, images: np.ndarray, state: np.ndarray, instruction: str) -> Encoded: ...

    @abstractmethod
    def _sample(self, encoded: Encoded, noise: np.ndarray) -> Candidates: ...

    @abstractmethod
    def _rollout(self, obs_latent: np.ndarray, actions: np.ndarray, handle: Any) -> Rollout: ...
