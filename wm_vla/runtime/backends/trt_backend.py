"""TensorRT 10 backend: engines built from our ONNX (fp32/fp16/int8, optimisation profile over K), cached in
`trt_engines/` (see engine_cache), run with `execute_async_v3` on a CUDA stream.

TensorRT is imported lazily: without it (or without a GPU) constructing the backend raises
BackendUnavailableError, and the selection chain falls back to onnxruntime. Device buffers and the stream come
from torch (CUDA builds), so no extra CUDA Python bindings are needed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.runtime.backends.base import Backend, Candidates, Encoded, Rollout
from wm_vla.runtime.engine_cache import EngineCache, EngineKey
from wm_vla.runtime.errors import BackendUnavailableError, EngineError
from wm_vla.runtime.export import GRAPH_IO, ExportInfo, load_export

log = logging.getLogger(__name__)
DEFAULT_ENGINE_DIR = Path("trt_engines")
ENCODER_PROFILE = (1, 1, 8)  # observations per encoder call


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there but libnvinfer is not
        raise BackendUnavailableError("the TensorRT Python package is not installed (pip install tensorrt on x86_64; "
                                      "on Jetson it comes with JetPack as python3-libnvinfer)") from exc
    return tensorrt


def cuda_device(device: str = "cuda") -> tuple[Any, str, str]:
    """(torch.device, GPU name, compute capability) or BackendUnavailableError when no GPU is visible."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise BackendUnavailableError(f"torch is needed for TensorRT device buffers: {exc}") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs an NVIDIA GPU, and torch sees no CUDA device here")
    requested = torch.device(device if device.startswith("cuda") else "cuda")
    idx = requested.index if requested.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(idx)
    return torch.device("cuda", idx), torch.cuda.get_device_name(idx), f"{major}.{minor}"


def engine_key(info: ExportInfo, graph: str, trt_version: str, gpu: str, precision: str, k_profile: tuple[int, int, int]
               ) -> EngineKey:
    profile = ENCODER_PROFILE if graph == "encoder" else k_profile
    return EngineKey(graph, info.graph_sha256(graph), trt_version, gpu, precision, profile)


def build_engine(onnx_path: Path, precision: str, profile: tuple[int, int, int], workspace_gib: float = 2.0,
                 calibration: list[dict[str, np.ndarray]] | None = None, calibration_cache: Path | None = None) -> bytes:
    """Parse the ONNX with TensorRT's parser and build a serialised engine with one profile over axis 0."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            shapes = [tuple([b, *shape[1:]]) for b in profile]
            opt_profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(opt_profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not calibration:
            raise EngineError("int8 needs calibration data: pass --calib-dataset (frames of a LeRobot dataset)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(trt, calibration, calibration_cache)
        config.set_calibration_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} ({precision}); see its log above")
    return bytes(serialized)


def make_calibrator(trt: Any, batches: list[dict[str, np.ndarray]], cache: Path | None) -> Any:
    """An entropy calibrator (TensorRT's implicit INT8 calibration) over pre-computed input batches."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches, self.i, self.buffers = batches, 0, {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i >= len(self.batches):
                return None
            feed = self.batches[self.i]
            self.i += 1
            self.buffers = {n: torch.from_numpy(np.ascontiguousarray(feed[n])).cuda() for n in names}
            return [int(self.buffers[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache is not None and cache.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            if cache is not None:
                cache.write_bytes(bytes(data))

    return Calibrator()


class _Engine:
    """One deserialised engine + execution context; inputs/outputs as torch CUDA tensors on one stream."""

    def __init__(self, trt: Any, runtime: Any, path: Path, graph: str, device: Any, stream: Any) -> None:
        import torch

        self.torch, self.graph, self.device, self.stream = torch, graph, device, stream
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialise {path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.dtypes = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = _torch_dtype(torch, trt, self.engine.get_tensor_dtype(name))

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        io = GRAPH_IO[self.graph]
        keep = []
        for name in io["inputs"]:
            value = feeds[name]
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            t = t.to(self.device, self.dtypes[name]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, int(t.data_ptr()))
        outs = {}
        for name in io["outputs"]:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, int(outs[name].data_ptr()))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError(f"TensorRT failed to execute the {self.graph} engine")
        self.stream.synchronize()
        return outs


def _torch_dtype(torch: Any, trt: Any, dt: Any) -> Any:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64,
             trt.bool: torch.bool, trt.int8: torch.int8}
    if dt not in table:
        raise EngineError(f"unsupported TensorRT I/O dtype {dt}")
    return table[dt]


class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, onnx_dir: Path | str, engine_dir: Path | str = DEFAULT_ENGINE_DIR, precision: str = "fp16",
                 device: str = "cuda", k_profile: tuple[int, int, int] = (1, 16, 64), build: bool = True,
                 rebuild: bool = False, calibration: dict[str, list[dict[str, np.ndarray]]] | None = None) -> None:
        trt = import_tensorrt()
        import torch

        self.torch_device, self.gpu, self.capability = cuda_device(device)
        self.info = load_export(Path(onnx_dir))
        self.precision, self.trt_version = precision, str(trt.__version__)
        self.cache = EngineCache(engine_dir)
        self.stream = torch.cuda.Stream(self.torch_device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines: dict[str, _Engine] = {}
        self.build_log: dict[str, str] = {}
        for graph in self.info.graph_names:
            key = engine_key(self.info, graph, self.trt_version, self.gpu, precision, k_profile)
            if build:
                onnx_path = self.info.graph_path(graph)
                calib = (calibration or {}).get(graph)
                cache_file = self.cache.root / f"{key.file_name}.calib" if precision == "int8" else None

                def make(p: Path = onnx_path, c: Any = calib, cf: Path | None = cache_file, k: EngineKey = key) -> bytes:
                    t0 = time.perf_counter()
                    blob = build_engine(p, precision, k.profile, calibration=c, calibration_cache=cf)
                    log.info("built %s in %.1f s", k.file_name, time.perf_counter() - t0)
                    return blob

                path, how = self.cache.get_or_build(key, make, rebuild)
            else:
                path, how = self.cache.require(key), "cached"
            self.build_log[graph] = how
            self.engines[graph] = _Engine(trt, runtime, path, graph, self.torch_device, self.stream)
        super().__init__(self.info.spec, str(self.torch_device), k_max=k_profile[2])

    def describe(self) -> str:
        return f"TensorRT {self.trt_version} ({self.precision}) on {self.gpu}"

    def _encode(self, images: np.ndarray, state: np.ndarray, instruction: str) -> Encoded:
        ids, mask = self.spec.token_ids(instruction)
        out = self.engines["encoder"].run({"images": images, "state": state, "token_ids": ids, "token_mask": mask})
        z = out["obs_latent"].float().cpu().numpy()[0]
        return Encoded(z, state, (out["context"], out["context_mask"]))

    def _sample(self, encoded: Encoded, noise: np.ndarray) -> Candidates:
        context, cmask = encoded.handle
        out = self.engines["sampler"].run({"context": context, "context_mask": cmask, "state": encoded.state,
                                           "noise": noise})
        actions = out["actions"]
        return Candidates(actions.float().cpu().numpy(), out["future_latents"].float().cpu().numpy(), actions)

    def _rollout(self, obs_latent: np.ndarray, actions: np.ndarray, handle: Any) -> Rollout:
        import torch

        chunks = handle if isinstance(handle, torch.Tensor) and handle.device == self.torch_device else actions
        out = self.engines["world_model"].run({"obs_latent": obs_latent, "actions": chunks})
        return Rollout(*(out[n].float().cpu().numpy() for n in ("next_latent", "progress", "failure_prob")))

    def close(self) -> None:
        self.engines.clear()
