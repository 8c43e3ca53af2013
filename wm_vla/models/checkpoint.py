"""Checkpoints = `model.safetensors` + `config.json` in a directory. Never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wm_vla.models.config import PolicyConfig, WorldModelConfig, from_dict, to_dict
from wm_vla.models.errors import CheckpointError, ModelConfigError
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import AnyWorldModel, LatentWorldModel, WorldModelEnsemble
from wm_vla.pickle_guard import pickle_kind, pickled_siblings, refusal

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
_KINDS: dict[str, tuple[type, type]] = {"policy": (PolicyConfig, FlarePolicy), "world_model": (WorldModelConfig, LatentWorldModel)}


def save_checkpoint(model: FlarePolicy | LatentWorldModel, directory: Path, extra: dict[str, Any] | None = None,
                    tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (+ optional extra tensors, e.g. optimiser state) and the JSON config atomically."""
    kind = "policy" if isinstance(model, FlarePolicy) else "world_model"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state.update({f"extra/{k}": v.detach().contiguous().cpu() for k, v in (tensors or {}).items()})
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "config": to_dict(model.cfg), "extra": extra or {}}
    for name, write in ((WEIGHTS, lambda p: save_file(state, str(p))),
                        (CONFIG, lambda p: p.write_text(json.dumps(meta, indent=2)))):
        tmp = directory / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, directory / name)
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a wm_vla checkpoint (no {CONFIG})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or meta.get("kind") not in _KINDS:
        raise CheckpointError(f"{path} is not a wm_vla checkpoint config (format_version {FORMAT_VERSION}, kind policy|world_model)")
    return meta


def load_checkpoint(directory: Path, expect: str | None = None, map_location: str = "cpu"
                    ) -> tuple[FlarePolicy | LatentWorldModel, dict[str, Any], dict[str, torch.Tensor]]:
    """Load (model, extra JSON, extra tensors). Shapes and keys must match the config exactly."""
    meta = read_meta(Path(directory))
    if expect is not None and meta["kind"] != expect:
        raise CheckpointError(f"{directory} holds a {meta['kind']} checkpoint, expected a {expect}")
    cfg_cls, model_cls = _KINDS[meta["kind"]]
    try:
        model = model_cls(from_dict(cfg_cls, meta["config"]))
    except ModelConfigError as exc:
        raise CheckpointError(f"{directory}/{CONFIG}: {exc}") from exc
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        pickled = pickled_siblings(directory)
        hint = f" (found pickled {pickled}: never loaded, convert them to safetensors)" if pickled else ""
        raise CheckpointError(f"{directory} has no {WEIGHTS}{hint}")
    kind = pickle_kind(weights)
    if kind:
        raise CheckpointError(refusal(weights, kind, "a safetensors file"))
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    extra_tensors = {k[len("extra/"):]: state.pop(k) for k in list(state) if k.startswith("extra/")}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise CheckpointError(f"{weights} has tensors of the wrong shape for its config: "
                              + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in bad[:5]))
    model.load_state_dict(state)
    return model.eval(), meta["extra"], extra_tensors


def weights_digest(directory: Path | str) -> str:
    """sha256 over a checkpoint's model tensors (names, dtypes, shapes, bytes), without its extra tensors
    (optimiser state): a training checkpoint and its shipped inference-only copy give the same digest. A world model
    records its encoder policy's digest (`encoder_digest`), so a runtime can refuse to rank in another latent."""
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    kind = pickle_kind(weights)
    if kind:
        raise CheckpointError(refusal(weights, kind, "a safetensors file"))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    h = hashlib.sha256()
    for key in sorted(k for k in state if not k.startswith("extra/")):
        t = state[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_world_model_encoder(world_models: str | Path | list[str] | list[Path], encoder: str | Path) -> None:
    """CheckpointError when a world model records the weights digest of another encoder policy than `encoder` (the
    one whose latent it would be given at run time); world models saved before digests were recorded pass."""
    dirs = [world_models] if isinstance(world_models, (str, Path)) else list(world_models)
    metas = [read_meta(Path(d)) for d in dirs]  # a missing or malformed member is named first
    digest = None
    for d, meta in zip(dirs, metas):
        extra = meta.get("extra", {})
        want = extra.get("encoder_digest") if isinstance(extra, dict) else None
        if not want:
            continue
        digest = digest or weights_digest(encoder)
        if digest != want:
            raise CheckpointError(f"world model {d} was trained in the latent of another policy's encoder than {encoder} "
                                  f"(trained with --policy {extra.get('policy')}): give that policy as the world "
                                  "model's encoder (wm_encoder / --wm-encoder)")


def load_world_models(paths: str | Path | list[str] | list[Path], map_location: str = "cpu"
                      ) -> tuple[AnyWorldModel, dict[str, torch.Tensor]]:
    """One world-model checkpoint, or several as a `WorldModelEnsemble` (their mean prediction), plus the first
    one's extra tensors. CheckpointError for a missing or mismatched member, naming it."""
    dirs = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not dirs:
        raise CheckpointError("no world-model checkpoint given")
    members, tensors = [], []
    for d in dirs:
        model, _, extra = load_checkpoint(d, expect="world_model", map_location=map_location)
        assert isinstance(model, LatentWorldModel)
        members.append(model)
        tensors.append(extra)
    if len(members) == 1:
        return members[0], tensors[0]
    try:
        return WorldModelEnsemble(members).eval(), tensors[0]
    except ModelConfigError as exc:
        raise CheckpointError(f"world models {[str(d) for d in dirs]} cannot be ensembled: {exc}") from exc
