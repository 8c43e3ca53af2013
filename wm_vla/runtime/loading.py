"""Open a backend for a node or a command from checkpoint paths: onnxruntime/tensorrt get an ONNX export, made
once into a cache folder keyed by the checkpoints' hashes when no `onnx_dir` is given."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wm_vla.runtime.backends import BackendConfig, Selection, select_backend
from wm_vla.runtime.errors import BackendUnavailableError, OnnxModelError

EXPORT_CACHE = Path("outputs/onnx_cache")


def checkpoint_key(*dirs: str | None) -> str:
    """Short hash of the checkpoints' weights and configs."""
    h = hashlib.sha256()
    for d in dirs:
        if d:
            for name in ("config.json", "model.safetensors"):
                path = Path(d) / name
                if not path.is_file():
                    raise BackendUnavailableError(f"checkpoint {d} has no {name}")
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def open_backend(backend: str, policy: str, world_model: str | None = None, onnx_dir: str | None = None,
                 device: str = "cpu", threads: int | None = None, cache: Path = EXPORT_CACHE,
                 steps: int | None = None) -> Selection:
    """The configured backend (fallback chain on); exports the checkpoints to ONNX first when it needs one.
    `steps`: Euler steps per sample (None: the policy config's); each value has its own cached export."""
    cfg = BackendConfig(backend=backend, device=device, onnx_dir=onnx_dir, policy=policy, world_model=world_model,
                        threads=threads, steps=steps).validate()
    if backend in ("onnxruntime", "tensorrt", "auto") and not onnx_dir:
        from wm_vla.runtime.export import export_checkpoints, load_export

        out = cache / (checkpoint_key(policy, world_model) + (f"-steps{steps}" if steps else ""))
        try:
            load_export(out, verify_hashes=False)
        except Exception:  # noqa: BLE001 - missing or partial: (re)export
            export_checkpoints(Path(policy), out, Path(world_model) if world_model else None, steps)
        cfg.onnx_dir = str(out)
    elif onnx_dir:
        check_export_matches(Path(onnx_dir), Path(policy), steps)
    return select_backend(cfg)


def check_export_matches(onnx_dir: Path, policy: Path, steps: int | None = None) -> None:
    """OnnxModelError when the export in `onnx_dir` was not made from a policy of `policy`'s shapes and vocabulary,
    or (given `steps`) for another number of Euler steps: an engine/ONNX of another checkpoint or sampler must not
    silently run in its place, nor be swapped for the torch fallback."""
    from wm_vla.models.checkpoint import read_meta
    from wm_vla.models.config import PolicyConfig, from_dict
    from wm_vla.runtime.export import load_export
    from wm_vla.runtime.spec import ModelSpec

    info = load_export(onnx_dir, verify_hashes=False)
    want = ModelSpec.from_policy_config(from_dict(PolicyConfig, read_meta(policy)["config"]), info.spec.steps,
                                        info.spec.has_world_model)
    diffs = [f"{k}: export {v!r} != checkpoint {getattr(want, k)!r}" for k, v in info.spec.__dict__.items()
             if k != "vocab" and v != getattr(want, k)]
    if steps is not None and info.spec.steps != steps:
        diffs.append(f"steps: export {info.spec.steps} != asked {steps}")
    if info.spec.vocab != want.vocab:
        diffs.append(f"vocab: export {len(info.spec.vocab)} words != checkpoint {len(want.vocab)} words")
    if diffs:
        raise OnnxModelError(f"the ONNX export {onnx_dir} does not match the checkpoint {policy}: " + "; ".join(diffs)
                             + " (re-run `wm-vla export` for this checkpoint)")
