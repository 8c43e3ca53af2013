"""Typed exceptions of the runtime package."""

from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Base class for runtime errors."""


class RankerError(RuntimeErrorBase, ValueError):
    """Candidates or latents of the wrong shape, or a world model that does not fit the policy."""


class ExportError(RuntimeErrorBase, ValueError):
    """A model that cannot be exported to ONNX, or an export directory that cannot be written."""


class OnnxModelError(RuntimeErrorBase, OSError):
    """An exported ONNX directory that is missing, incomplete, corrupt, or does not match its metadata."""


class InputShapeError(RuntimeErrorBase, ValueError):
    """An input array of the wrong shape or dtype for a backend's graph."""


class BackendUnavailableError(RuntimeErrorBase):
    """A backend whose library, device or model files are not available here (the fallback chain moves on)."""


class UnsupportedOperatorError(RuntimeErrorBase, ValueError):
    """An ONNX graph with operators or an opset that TensorRT's ONNX parser does not support."""


class EngineError(RuntimeErrorBase):
    """A TensorRT engine that cannot be built, loaded or run."""


class EngineManifestError(EngineError, ValueError):
    """A cached engine whose manifest entry does not match the ONNX, TensorRT version, GPU or precision."""


class ParityError(RuntimeErrorBase, ValueError):
    """A backend whose outputs disagree with the reference beyond tolerance."""


class InstructionError(RuntimeErrorBase, ValueError):
    """An instruction the policy cannot act on: empty, or with no word of its vocabulary."""


class BackendConfigError(RuntimeErrorBase, ValueError):
    """A backend configuration that names an unknown backend, device or precision."""


class LatencyError(RuntimeErrorBase):
    """Base class of the latency profiler, budget solver and live governor errors."""


class LatencyConfigError(LatencyError, ValueError):
    """A latency budget, governor setting, measurement file or search space that is malformed or inconsistent."""


class DeviceProfileError(LatencyError, ValueError):
    """A device profile YAML (config/devices) that is missing, malformed or inconsistent."""


class BudgetError(LatencyError):
    """No configuration fits the latency budget; `report` holds every candidate and why it failed."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


class ChunkError(RuntimeErrorBase, ValueError):
    """An action chunk the executor cannot stream: wrong shape, non-finite values, or entirely in the past."""


class SafetyError(RuntimeErrorBase, ValueError):
    """An input the safety filter rejects (the command path then holds); `reason` is a short diagnostic key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidJointStateError(SafetyError):
    """A joint state with missing joints, mismatched lengths, or NaN/inf values."""


class SamplerProcessError(RuntimeErrorBase):
    """A sampler child process that could not load the policy, died, hung or answered garbage."""


class SamplerInputError(RuntimeErrorBase, ValueError):
    """Inputs the sampler process's backend refused (the process itself is fine)."""
