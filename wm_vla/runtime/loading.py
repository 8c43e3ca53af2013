"""Open a backend for a node or a command from checkpoint paths: onnxruntime/tensorrt get an ONNX export, made
once into a cache folder keyed by the checkpoints' hashes when no `onnx_dir` is given."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wm_vla.runtime.backends import BackendConfig, Selection, select_backend
from wm_vla.runtime.errors import BackendUnavailableError

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
                 device: str = "cpu", threads: int | None = None, cache: Path = EXPORT_CACHE) -> Selection:
    """The configured backend (fallback chain on); exports the checkpoints to ONNX first when it needs one."""
    if backend in ("onnxruntime", "tensorrt", "auto") and not onnx_dir:
        from wm_vla.runtime.export import export_checkpoints, load_export

        out = cache / checkpoint_key(policy, world_model)
        try:
            load_export(out, verify_hashes=False)
        except Exception:  # noqa: BLE001 - missing or partial: (re)export
            export_checkpoints(Path(policy), out, Path(world_model) if world_model else None)
        onnx_dir = str(out)
    return select_backend(BackendConfig(backend=backend, device=device, onnx_dir=onnx_dir, policy=policy,
                                        world_model=world_model, threads=threads))
