"""INT8 calibration inputs for every exported graph, from dataset frames (computed with onnxruntime on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm_vla.runtime.spec import candidate_noise


def calibration_feeds(onnx_dir: Path, images: np.ndarray, states: np.ndarray, tasks: list[str], frames: int = 64,
                      k: int = 16, seed: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """Graph name -> list of input dicts (one per calibration batch) from up to `frames` evenly spaced frames.

    images: uint8 (N, cams, 3, S, S) at the policy's image size; states (N, state_dim); one task per frame.
    The sampler and world model see the encoder's real outputs and K candidates of the policy's real samples.
    """
    from wm_vla.runtime.backends.ort_backend import OrtBackend

    backend = OrtBackend(onnx_dir, "cpu")
    spec = backend.spec
    n = len(states)
    picks = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int)) if n else np.zeros(0, int)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {g: [] for g in backend.info.graph_names}
    for i, idx in enumerate(picks):
        img = (np.asarray(images[idx : idx + 1], np.float32) / 255.0).astype(np.float32)
        state = np.asarray(states[idx : idx + 1], np.float32)
        ids, mask = spec.token_ids(tasks[idx])
        feeds["encoder"].append({"images": img, "state": state, "token_ids": ids, "token_mask": mask})
        enc = backend.encode(img, state, tasks[idx])
        noise = candidate_noise(spec.horizon, spec.action_dim, k, seed + i)
        context, cmask = enc.handle
        feeds["sampler"].append({"context": context, "context_mask": cmask, "state": state, "noise": noise})
        if "world_model" in feeds:
            cand = backend.sample(enc, noise)
            feeds["world_model"].append({"obs_latent": enc.obs_latent[None], "actions": cand.actions})
    backend.close()
    return feeds
