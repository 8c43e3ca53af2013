"""onnxruntime backend over the exported graphs: CPU, or CUDA with IO binding (device buffers chained)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.runtime.backends.base import Backend, Candidates, Encoded, Rollout, default_threads
from wm_vla.runtime.errors import BackendUnavailableError, InputShapeError, OnnxModelError
from wm_vla.runtime.export import GRAPH_IO, ExportInfo, load_export

log = logging.getLogger(__name__)


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise BackendUnavailableError(f"onnxruntime is not installed: {exc}") from exc
    return onnxruntime


def session_options(threads: int | None = None) -> Any:
    """Latency-tuned options: all graph optimisations, intra-op threads = cores, sequential execution.

    Worker threads do not spin between ops: on a small CPU (2 cores here, a Jetson sharing cores with ROS and
    the camera driver) spinning workers steal the core the calling thread needs. Measured on the 2-core dev
    machine at K=16: 85 ms per decision with spinning at 2 threads, 77 ms at 1 thread, 64 ms without spinning.
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only
    return so


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_dir: Path | str, device: str = "cpu", threads: int | None = None,
                 verify_hashes: bool = True) -> None:
        ort = _ort()
        self.info: ExportInfo = load_export(Path(onnx_dir), verify_hashes)
        self.gpu = device.startswith("cuda")
        self.device_id = 0
        if self.gpu:
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError("onnxruntime has no CUDAExecutionProvider here (installed providers: "
                                              f"{', '.join(available)}; install onnxruntime-gpu)")
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            self.device_id = dev_id
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.threads = threads or default_threads()
        self.sessions: dict[str, Any] = {}
        for name in self.info.graph_names:
            self.sessions[name] = self._open(name, providers, session_options(self.threads))
        if self.gpu and self.sessions["sampler"].get_providers()[0] != "CUDAExecutionProvider":
            raise BackendUnavailableError("onnxruntime could not start the CUDA execution provider "
                                          f"(session providers: {self.sessions['sampler'].get_providers()})")
        super().__init__(self.info.spec, device if self.gpu else "cpu")

    def _open(self, name: str, providers: list[Any], so: Any) -> Any:
        ort = _ort()
        path = self.info.graph_path(name)
        try:
            sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad models
            raise OnnxModelError(f"onnxruntime cannot load {path}: {str(exc).strip()[:300]}") from exc
        want = GRAPH_IO[name]
        got_in, got_out = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
        if got_in != want["inputs"] or got_out != want["outputs"]:
            raise OnnxModelError(f"{path} has inputs {got_in} and outputs {got_out}; expected {want['inputs']} -> "
                                 f"{want['outputs']} (an export from another version?)")
        return sess

    def describe(self) -> str:
        ort = _ort()
        where = "CUDA EP, IO binding" if self.gpu else f"CPU EP, {self.threads} threads"
        return f"onnxruntime {ort.__version__} ({where})"

    def _run(self, name: str, feeds: dict[str, Any], keep_on_device: tuple[str, ...] = ()) -> dict[str, Any]:
        """Run one graph; on a GPU, inputs may be device OrtValues and `keep_on_device` outputs stay there."""
        sess = self.sessions[name]
        outputs = GRAPH_IO[name]["outputs"]
        ort = _ort()
        try:
            if not self.gpu:
                return dict(zip(outputs, sess.run(outputs, feeds)))
            binding = sess.io_binding()
            for key, value in feeds.items():
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(key, value)
                else:
                    binding.bind_cpu_input(key, value)
            for out in outputs:
                if out in keep_on_device:
                    binding.bind_output(out, "cuda", self.device_id)
                else:
                    binding.bind_output(out, "cpu")
            sess.run_with_iobinding(binding)
            values = binding.get_outputs()
            return {out: v if out in keep_on_device else v.numpy() for out, v in zip(outputs, values)}
        except Exception as exc:  # noqa: BLE001
            if "INVALID_ARGUMENT" in str(exc) or "Invalid rank" in str(exc) or "Got invalid dimensions" in str(exc):
                raise InputShapeError(f"{name} graph rejected its inputs: {str(exc).strip()[:300]}") from exc
            raise

    def _encode(self, images: np.ndarray, state: np.ndarray, instruction: str) -> Encoded:
        ids, mask = self.spec.token_ids(instruction)
        keep = ("context", "context_mask") if self.gpu else ()
        out = self._run("encoder", {"images": images, "state": state, "token_ids": ids, "token_mask": mask}, keep)
        return Encoded(np.asarray(out["obs_latent"])[0], state, (out["context"], out["context_mask"]))

    def _sample(self, encoded: Encoded, noise: np.ndarray) -> Candidates:
        context, cmask = encoded.handle
        out = self._run("sampler", {"context": context, "context_mask": cmask, "state": encoded.state, "noise": noise})
        return Candidates(out["actions"], out["future_latents"])

    def _rollout(self, obs_latent: np.ndarray, actions: np.ndarray, handle: Any) -> Rollout:
        out = self._run("world_model", {"obs_latent": obs_latent, "actions": actions})
        return Rollout(out["next_latent"], out["progress"], out["failure_prob"])

    def close(self) -> None:
        self.sessions.clear()
