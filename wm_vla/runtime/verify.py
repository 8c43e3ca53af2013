"""Run two backends on the same observation and noise and report their agreement per output and K."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wm_vla.runtime.backends.base import Backend
from wm_vla.runtime.parity import Agreement, compare
from wm_vla.runtime.spec import ModelSpec, candidate_noise

INSTRUCTION = "touch the red cube"


def probe_observation(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic observation (images in [0, 1], state ~ N(0, 1))."""
    rng = np.random.default_rng(seed)
    images = rng.random((1, len(spec.cameras), 3, spec.image_size, spec.image_size), dtype=np.float32)
    return images, rng.standard_normal((1, spec.state_dim)).astype(np.float32)


def outputs(backend: Backend, images: np.ndarray, state: np.ndarray, noise: np.ndarray,
            instruction: str = INSTRUCTION) -> dict[str, np.ndarray]:
    """Every output a backend produces for one observation and noise (world-model outputs when it has one)."""
    enc = backend.encode(images, state, instruction)
    cand = backend.sample(enc, noise)
    out = {"obs_latent": enc.obs_latent, "actions": cand.actions, "future_latents": cand.future_latents}
    if backend.spec.has_world_model:
        roll = backend.rollout(enc.obs_latent, cand)
        out.update(next_latent=roll.next_latent, progress=roll.progress, failure_prob=roll.failure_prob)
    return out


def compare_backends(reference: Backend, other: Backend, ks: Sequence[int] = (1, 16), seed: int = 0
                     ) -> dict[int, dict[str, Agreement]]:
    """Agreement of `other` with `reference` for each K (same observation, same noise)."""
    spec = reference.spec
    images, state = probe_observation(spec, seed)
    figures = {}
    for k in ks:
        noise = candidate_noise(spec.horizon, spec.action_dim, k, seed)
        figures[k] = compare(outputs(reference, images, state, noise), outputs(other, images, state, noise))
    return figures


def parity_vs_torch(onnx_dir: Path, policy_dir: str | Path, wm_dir: str | Path | None, ks: Sequence[int] = (1, 16)
                    ) -> dict[int, dict[str, Agreement]]:
    """onnxruntime (CPU) vs the torch reference built from the checkpoints, at the export's number of steps."""
    from wm_vla.runtime.backends.ort_backend import OrtBackend
    from wm_vla.runtime.backends.torch_backend import TorchBackend

    ort = OrtBackend(onnx_dir, "cpu")
    ref = TorchBackend.from_checkpoints(policy_dir, wm_dir, "cpu", ort.spec.steps)
    return compare_backends(ref, ort, ks)
