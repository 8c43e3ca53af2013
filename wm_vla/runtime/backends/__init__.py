"""Backend selection: the configured backend first, then the fallback chain, with a logged reason per fallback.

Chain: tensorrt -> onnxruntime-gpu -> onnxruntime-cpu -> torch. `backend` picks where to start (auto and
tensorrt start at the top, onnxruntime at onnxruntime-gpu, torch at torch); `device: cpu` skips the GPU
entries; `fallback: false` turns the first failure into an error instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from wm_vla.models.errors import ModelError
from wm_vla.runtime.backends.base import Backend, Candidates, Encoded, Rollout, default_threads
from wm_vla.runtime.errors import BackendConfigError, BackendUnavailableError, OnnxModelError, RuntimeErrorBase

log = logging.getLogger(__name__)
CHAIN = ("tensorrt", "onnxruntime-gpu", "onnxruntime-cpu", "torch")
START = {"auto": 0, "tensorrt": 0, "onnxruntime": 1, "torch": 3}
GPU_ENTRIES = ("tensorrt", "onnxruntime-gpu")

__all__ = ["Backend", "BackendConfig", "Candidates", "CHAIN", "Encoded", "Fallback", "Rollout", "Selection",
           "create_backend", "default_threads", "select_backend"]


@dataclass
class BackendConfig:
    backend: str = "auto"              # auto | tensorrt | onnxruntime | torch
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    onnx_dir: str | None = None        # `wm-vla export` output (onnxruntime, tensorrt)
    policy: str | None = None          # checkpoints (torch); default: the ones recorded in the export
    world_model: str | None = None
    precision: str = "fp16"            # tensorrt: fp32 | fp16 | int8
    engine_dir: str = "trt_engines"
    k_profile: tuple[int, int, int] = (1, 16, 64)  # tensorrt optimisation profile over K (min, opt, max)
    threads: int | None = None         # intra-op threads (default: OMP_NUM_THREADS or the usable cores)
    fallback: bool = True
    build_engines: bool = True         # tensorrt: build missing/stale engines (False: refuse them)
    steps: int | None = None           # Euler steps per sample (None: the export's, else the policy config's)

    def validate(self) -> BackendConfig:
        if self.backend not in START:
            raise BackendConfigError(f"backend must be one of {', '.join(START)}, got {self.backend!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise BackendConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise BackendConfigError(f"precision must be fp32, fp16 or int8, got {self.precision!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise BackendConfigError(f"steps must be a positive integer (or None), got {self.steps!r}")
        return self


@dataclass(frozen=True)
class Fallback:
    candidate: str
    reason: str


@dataclass
class Selection:
    backend: Backend
    chosen: str
    fallbacks: list[Fallback] = field(default_factory=list)


def _gpu_device(cfg: BackendConfig) -> str:
    return cfg.device if cfg.device.startswith("cuda") else "cuda"


def create_backend(candidate: str, cfg: BackendConfig) -> Backend:
    """Instantiate one chain entry; raises a RuntimeErrorBase/ModelError subclass saying why it cannot run here."""
    if candidate in ("tensorrt", "onnxruntime-gpu", "onnxruntime-cpu") and not cfg.onnx_dir:
        raise BackendUnavailableError("no ONNX export given (run `wm-vla export` and pass its directory)")
    if candidate == "tensorrt":
        from wm_vla.runtime.backends.trt_backend import TrtBackend

        return _check_steps(TrtBackend(cfg.onnx_dir, cfg.engine_dir, cfg.precision,  # type: ignore[arg-type]
                                       _gpu_device(cfg), cfg.k_profile, build=cfg.build_engines), cfg)
    if candidate.startswith("onnxruntime"):
        from wm_vla.runtime.backends.ort_backend import OrtBackend

        device = _gpu_device(cfg) if candidate == "onnxruntime-gpu" else "cpu"
        return _check_steps(OrtBackend(cfg.onnx_dir, device, cfg.threads), cfg)  # type: ignore[arg-type]
    if candidate == "torch":
        return _torch_backend(cfg)
    raise BackendConfigError(f"unknown backend {candidate!r}")


def _check_steps(backend: Backend, cfg: BackendConfig) -> Backend:
    """An exported sampler is unrolled over a fixed number of steps: refuse one made for other steps."""
    if cfg.steps is not None and backend.spec.steps != cfg.steps:
        backend.close()
        raise OnnxModelError(f"the export in {cfg.onnx_dir} samples with {backend.spec.steps} Euler steps, "
                             f"{cfg.steps} were asked for (re-export with `wm-vla export --steps {cfg.steps}`)")
    return backend


def _torch_backend(cfg: BackendConfig) -> Backend:
    import torch

    from wm_vla.runtime.backends.torch_backend import TorchBackend

    policy, wm, steps = cfg.policy, cfg.world_model, None
    if cfg.onnx_dir:  # same sampler as the export (steps), and its checkpoints when none are given
        try:
            from wm_vla.runtime.export import load_export

            info = load_export(Path(cfg.onnx_dir), verify_hashes=False)
            steps = info.spec.steps
            policy = policy or info.meta.get("sources", {}).get("policy")
            wm = wm or info.meta.get("sources", {}).get("world_model")
        except RuntimeErrorBase:
            pass
    if not policy:
        raise BackendUnavailableError("the torch backend needs a policy checkpoint (none given, none recorded in the "
                                      "export)")
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.threads and device == "cpu":
        torch.set_num_threads(cfg.threads)
    return TorchBackend.from_checkpoints(policy, wm, device, cfg.steps or steps)


def select_backend(cfg: BackendConfig) -> Selection:
    """The first chain entry, from the configured start, that can run here; every skipped entry has a reason."""
    cfg.validate()
    fallbacks: list[Fallback] = []
    for candidate in CHAIN[START[cfg.backend]:]:
        if cfg.device == "cpu" and candidate in GPU_ENTRIES:
            fallbacks.append(Fallback(candidate, "skipped: device is cpu"))
            continue
        try:
            backend = create_backend(candidate, cfg)
        except (RuntimeErrorBase, ModelError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if not cfg.fallback:
                raise BackendUnavailableError(f"backend {candidate} cannot run ({reason}) and fallback is off") from exc
            log.warning("backend %s unavailable, falling back: %s", candidate, reason)
            fallbacks.append(Fallback(candidate, reason))
            continue
        if fallbacks:
            log.warning("using backend %s (%s) after %d fallback(s)", candidate, backend.describe(), len(fallbacks))
        return Selection(backend, candidate, fallbacks)
    raise BackendUnavailableError("no backend can run here:\n  " + "\n  ".join(f"{f.candidate}: {f.reason}"
                                                                              for f in fallbacks))
