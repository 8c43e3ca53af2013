"""Device profiles (config/devices/*.yaml): what a target runs fast, its memory, known caveats, default budgets.

The budget solver uses a profile as its prior: which backends to try and in which order, which precisions the
hardware supports (e.g. no FP8 on Orin), the default budget and safety margin, the intra-op thread count for CPU
backends and the memory a configuration may use. `load_device("jetson-orin-agx")` reads config/devices/<name>.yaml;
a path loads that file. Malformed files raise `DeviceProfileError` naming the file and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from wm_vla.robots.errors import ProfileError
from wm_vla.robots.profiles import _build, data_root  # the typed YAML -> dataclass builder of robot profiles
from wm_vla.runtime.errors import DeviceProfileError

KINDS = ("jetson", "gpu", "cpu")
BACKENDS = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "fp4")
# what each of our backends can run (the solver intersects this with the device's precisions)
BACKEND_PRECISIONS = {"tensorrt": ("fp32", "fp16", "int8"), "onnxruntime": ("fp32",), "torch": ("fp32",)}


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    name: str
    description: str
    kind: str                          # jetson | gpu | cpu
    accelerator: str                   # the GPU (or "none")
    cpu_cores: int
    memory_gb: float                   # RAM (shared with the GPU where unified_memory)
    unified_memory: bool = False
    gpu_memory_gb: float = 0.0         # dedicated GPU memory (0: none or unified)
    backends: tuple[str, ...]          # solver search order, best first
    precisions: tuple[str, ...]        # precisions the hardware runs natively
    default_budget_ms: float           # decision p99 budget when `tune` is given none
    budget_margin: float = 0.15        # a configuration fits when p99 * (1 + margin) <= budget
    threads: int = 0                   # intra-op threads for CPU backends (0: the usable cores)
    memory_fraction: float = 0.5       # share of memory_gb the models may use (the rest: ROS, drivers, buffers)
    caveats: tuple[str, ...] = ()

    def search_precisions(self, backend: str) -> list[str]:
        """Precisions worth trying on this device with `backend` (ours x the hardware's)."""
        return [p for p in BACKEND_PRECISIONS.get(backend, ()) if p in self.precisions]


def devices_dir() -> Path:
    return data_root() / "config" / "devices"


def known_devices() -> list[str]:
    return sorted(p.stem for p in devices_dir().glob("*.yaml"))


def load_device(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """A device profile by name (config/devices/<name>.yaml) or from a YAML path."""
    text = os.fspath(name_or_path)
    is_name = Path(text).suffix == "" and "/" not in text and os.sep not in text
    path = devices_dir() / f"{text}.yaml" if is_name else Path(text)
    if not path.is_file():
        hint = f" (known: {', '.join(known_devices())})" if is_name else ""
        raise DeviceProfileError(f"{path}: no device profile{hint}")
    try:
        return parse_device(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise DeviceProfileError(f"{path}: cannot read device profile: {exc}") from exc


def parse_device(text: str, source: str = "<string>") -> DeviceProfile:
    """Parse and validate device-profile YAML; errors name `source` and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeviceProfileError(f"{source}: invalid YAML: {exc}") from exc
    try:
        dev: DeviceProfile = _build(DeviceProfile, data, "", source)
    except ProfileError as exc:
        raise DeviceProfileError(str(exc)) from exc

    def fail(where: str, msg: str) -> DeviceProfileError:
        return DeviceProfileError(f"{source}: {where}: {msg}")

    if dev.kind not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}, got {dev.kind!r}")
    for i, b in enumerate(dev.backends):
        if b not in BACKENDS:
            raise fail(f"backends[{i}]", f"unknown backend {b!r} (known: {', '.join(BACKENDS)})")
    if not dev.backends or len(set(dev.backends)) != len(dev.backends):
        raise fail("backends", "must list each backend at most once, at least one")
    for i, p in enumerate(dev.precisions):
        if p not in PRECISIONS:
            raise fail(f"precisions[{i}]", f"unknown precision {p!r} (known: {', '.join(PRECISIONS)})")
    if "fp32" not in dev.precisions:
        raise fail("precisions", "every device runs fp32; list it")
    if dev.kind == "cpu" and "tensorrt" in dev.backends:
        raise fail("backends", "a cpu device cannot run tensorrt")
    checks = [("cpu_cores", dev.cpu_cores >= 1), ("memory_gb", dev.memory_gb > 0),
              ("gpu_memory_gb", dev.gpu_memory_gb >= 0),
              ("default_budget_ms", dev.default_budget_ms > 0), ("budget_margin", 0 <= dev.budget_margin < 1),
              ("threads", dev.threads >= 0), ("memory_fraction", 0 < dev.memory_fraction <= 1)]
    for where, ok in checks:
        if not ok:
            raise fail(where, f"out of range: {getattr(dev, where)!r}")
    return dev
