"""Model configurations: dataclasses serialised to JSON, with the `tiny` (CPU) and `base` (GPU) presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from wm_vla.models.errors import ModelConfigError

T = TypeVar("T")


@dataclass
class PolicyConfig:
    """FLARE VLA policy: encoders, DiT flow-matching head, future tokens."""

    preset: str = "tiny"
    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 96         # images are resized to this square size
    state_dim: int = 7
    action_dim: int = 7
    horizon: int = 16            # H: actions per chunk
    exec_horizon: int = 8        # actions executed before the next decision
    dim: int = 128               # token width
    heads: int = 4
    encoder_layers: int = 1      # observation encoder (fuses vision, language, state tokens)
    dit_layers: int = 4
    image_tokens: int = 9        # per camera (3x3 pooled CNN grid)
    keypoints: int = 16          # spatial-softmax keypoints per camera, as one extra token (0 = off)
    cnn_channels: tuple[int, ...] = (16, 32, 64, 128)
    vocab: tuple[str, ...] = ()  # instruction words seen in training ("<unk>" is index 0)
    vision_tower: str = ""       # local HF vision model directory (replaces the CNN); "" = train the CNN
    text_tower: str = ""         # local HF text encoder + tokenizer directory; "" = learned word embeddings
    max_words: int = 10
    film: bool = False           # FiLM: the instruction scales and shifts every CNN stage (built-in CNN only)
    latent_dim: int = 128        # observation latent z and FLARE future latents
    future_tokens: int = 4       # M
    flare_layer: int = 2         # DiT layer whose future-token states feed the FLARE head
    flare_weight: float = 0.2    # lambda; 0 disables FLARE
    ema_decay: float = 0.995     # EMA target encoder
    denoise_steps: int = 10      # Euler steps at sampling
    fps: int = 10

    def validate(self) -> PolicyConfig:
        if self.preset not in PRESETS:
            raise ModelConfigError(f"unknown preset {self.preset!r}; presets: {', '.join(PRESETS)}")
        for name in ("image_size", "state_dim", "action_dim", "horizon", "dim", "heads", "dit_layers", "latent_dim",
                     "future_tokens", "denoise_steps", "image_tokens"):
            if int(getattr(self, name)) <= 0:
                raise ModelConfigError(f"policy config {name} must be positive, got {getattr(self, name)}")
        if not self.cameras:
            raise ModelConfigError("policy config needs at least one camera")
        if self.dim % self.heads:
            raise ModelConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 0 < self.exec_horizon <= self.horizon:
            raise ModelConfigError(f"exec_horizon must be in 1..horizon ({self.horizon}), got {self.exec_horizon}")
        if not 1 <= self.flare_layer <= self.dit_layers:
            raise ModelConfigError(f"flare_layer must be in 1..dit_layers ({self.dit_layers}), got {self.flare_layer}")
        if self.flare_weight < 0 or not 0 < self.ema_decay < 1:
            raise ModelConfigError("flare_weight must be >= 0 and ema_decay in (0, 1)")
        if self.film and self.vision_tower:
            raise ModelConfigError("film conditions the built-in CNN; it cannot be combined with a vision_tower")
        if int(round(self.image_tokens ** 0.5)) ** 2 != self.image_tokens:
            raise ModelConfigError(f"image_tokens must be a square number, got {self.image_tokens}")
        return self


@dataclass
class WorldModelConfig:
    """Latent dynamics (z_t, chunk) -> z_{t+H} with progress and failure heads."""

    role: str = "teacher"        # teacher | student
    latent_dim: int = 128
    action_dim: int = 7
    horizon: int = 16
    hidden: int = 512
    layers: int = 4
    dropout: float = 0.0

    def validate(self) -> WorldModelConfig:
        if self.role not in ("teacher", "student"):
            raise ModelConfigError(f"world model role must be teacher or student, got {self.role!r}")
        for name in ("latent_dim", "action_dim", "horizon", "hidden", "layers"):
            if int(getattr(self, name)) <= 0:
                raise ModelConfigError(f"world model config {name} must be positive, got {getattr(self, name)}")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "base": {"dim": 384, "heads": 6, "encoder_layers": 4, "dit_layers": 8, "flare_layer": 4, "latent_dim": 256,
             "cnn_channels": (64, 128, 192, 256), "image_tokens": 16, "image_size": 128, "max_words": 24},
}
WM_PRESETS: dict[str, dict[str, Any]] = {
    "teacher": {"hidden": 512, "layers": 4},
    "student": {"role": "student", "hidden": 128, "layers": 2},
}


def policy_preset(name: str, **overrides: Any) -> PolicyConfig:
    if name not in PRESETS:
        raise ModelConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return from_dict(PolicyConfig, {"preset": name, **PRESETS[name], **overrides}).validate()


def world_model_preset(role: str, **overrides: Any) -> WorldModelConfig:
    if role not in WM_PRESETS:
        raise ModelConfigError(f"unknown world model preset {role!r}; presets: {', '.join(WM_PRESETS)}")
    return from_dict(WorldModelConfig, {**WM_PRESETS[role], **overrides}).validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass, rejecting unknown keys and coercing lists to tuples."""
    if not isinstance(data, dict):
        raise ModelConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ModelConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ModelConfigError(f"bad {cls.__name__}: {exc}") from exc


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2)

