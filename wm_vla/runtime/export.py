"""ONNX export of the policy (observation encoder, unrolled sampler with FLARE head) and the student world model.

`wm-vla export --policy CKPT --wm CKPT --out DIR` writes three graphs with fixed input/output names and a
dynamic batch axis (K candidates for the sampler and world model), plus `export.json` beside them:

  encoder.onnx      images f32 [B, cams, 3, S, S] in [0, 1], state f32 [B, state_dim] (raw units),
                    token_ids i64 [B, max_words], token_mask bool [B, max_words]
                    -> context f32 [B, T, dim], context_mask bool [B, T], obs_latent f32 [B, latent_dim]
  sampler.onnx      context f32 [1, T, dim], context_mask bool [1, T], state f32 [1, state_dim],
                    noise f32 [K, H, A]  ->  actions f32 [K, H, A] (raw units), future_latents f32 [K, M, latent_dim]
  world_model.onnx  obs_latent f32 [1, latent_dim], actions f32 [K, H, A] (raw units)
                    -> next_latent f32 [K, latent_dim], progress f32 [K], failure_prob f32 [K]

The sampler is the N-step Euler loop unrolled, with the noise as an input, so it reproduces
`FlarePolicy.sample(obs, K, noise=noise)`. Normalisation statistics are baked into the graphs and recorded in
`export.json` (and in each graph's metadata) together with preset, H, A, steps, vocabulary and file hashes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint
from wm_vla.models.config import to_dict
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.pickle_guard import pickle_kind, refusal
from wm_vla.runtime.errors import ExportError, OnnxModelError
from wm_vla.runtime.spec import ModelSpec

FORMAT_VERSION = 1
META_FILE = "export.json"
DEFAULT_OPSET = 20  # TensorRT 10's ONNX parser supports opsets 9-20; opset 20 has a native Gelu
GRAPHS = ("encoder", "sampler", "world_model")
GRAPH_IO: dict[str, dict[str, list[str]]] = {
    "encoder": {"inputs": ["images", "state", "token_ids", "token_mask"],
                "outputs": ["context", "context_mask", "obs_latent"]},
    "sampler": {"inputs": ["context", "context_mask", "state", "noise"], "outputs": ["actions", "future_latents"]},
    "world_model": {"inputs": ["obs_latent", "actions"], "outputs": ["next_latent", "progress", "failure_prob"]},
}
DYNAMIC_AXIS = {"encoder": "batch", "sampler": "K", "world_model": "K"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ExportInfo:
    """An export directory: the model spec, graph files and their hashes, and the full metadata."""

    directory: Path
    spec: ModelSpec
    meta: dict[str, Any] = field(repr=False)

    def graph_path(self, name: str) -> Path:
        if name not in self.meta["graphs"]:
            raise OnnxModelError(f"{self.directory} has no {name} graph (exported without a world model?)")
        return self.directory / self.meta["graphs"][name]["file"]

    def graph_sha256(self, name: str) -> str:
        return str(self.meta["graphs"][name]["sha256"])

    @property
    def graph_names(self) -> list[str]:
        return [g for g in GRAPHS if g in self.meta["graphs"]]


def _trace(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, name: str, opset: int) -> None:
    io = GRAPH_IO[name]
    axis = DYNAMIC_AXIS[name]
    batched = {"encoder": io["inputs"] + io["outputs"], "sampler": ["noise", "actions", "future_latents"],
               "world_model": ["actions", "next_latent", "progress", "failure_prob"]}[name]
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(module, args, str(tmp), input_names=io["inputs"], output_names=io["outputs"],
                              dynamic_axes={n: {0: axis} for n in batched}, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is an export error for the user
            tmp.unlink(missing_ok=True)
            raise ExportError(f"exporting the {name} graph failed: {type(exc).__name__}: {exc}") from exc
    os.replace(tmp, path)


def _annotate(path: Path, name: str, meta: dict[str, Any]) -> None:
    """Embed the metadata in the graph (metadata_props) and validate it with the ONNX checker."""
    import onnx

    model = onnx.load(str(path))
    props = {"wm_vla.graph": name, "wm_vla.format_version": str(FORMAT_VERSION),
             "wm_vla.spec": json.dumps(meta["spec"]), "wm_vla.normalization": json.dumps(meta["normalization"]),
             "wm_vla.io": json.dumps(GRAPH_IO[name])}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "wm_vla"
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def export_models(policy: FlarePolicy, out: Path, world_model: LatentWorldModel | None = None, steps: int | None = None,
                  opset: int = DEFAULT_OPSET, sources: dict[str, str] | None = None) -> ExportInfo:
    """Export the policy (and the world model, if given) to `out`; returns the loaded export info."""
    from wm_vla.runtime.graphs import EncoderGraph, SamplerGraph, WorldModelGraph

    cfg = policy.cfg
    n_steps = int(steps or cfg.denoise_steps)
    if n_steps < 1:
        raise ExportError(f"steps must be >= 1, got {n_steps}")
    if world_model is not None:
        w = world_model.cfg
        if (w.latent_dim, w.horizon, w.action_dim) != (cfg.latent_dim, cfg.horizon, cfg.action_dim):
            raise ExportError(f"world model (latent {w.latent_dim}, H {w.horizon}, A {w.action_dim}) does not fit the "
                              f"policy (latent {cfg.latent_dim}, H {cfg.horizon}, A {cfg.action_dim})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec.from_policy_config(cfg, n_steps, world_model is not None)
    policy = policy.eval()
    norm = {k: getattr(policy, k).tolist() for k in ("state_mean", "state_std", "action_mean", "action_std")}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_json(), "normalization": norm, "opset": opset,
        "exporter": f"torch.onnx (TorchScript tracer), torch {torch.__version__}",
        "sources": sources or {}, "policy_config": to_dict(cfg),
        "world_model_config": to_dict(world_model.cfg) if world_model is not None else None,
        "io": {g: GRAPH_IO[g] for g in GRAPHS if g != "world_model" or world_model is not None},
        "dynamic_axes": DYNAMIC_AXIS, "graphs": {},
    }
    encoder = EncoderGraph(policy).eval()
    sampler = SamplerGraph(policy, n_steps).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, len(spec.cameras), 3, spec.image_size, spec.image_size, generator=g)
    state = torch.randn(1, spec.state_dim, generator=g)
    ids, mask = (torch.from_numpy(a) for a in spec.token_ids(" ".join(spec.vocab)))
    noise = torch.randn(2, spec.horizon, spec.action_dim, generator=g)
    with torch.no_grad():
        context, cmask, z = encoder(images, state, ids, mask)
        actions, _ = sampler(context, cmask, state, noise)
    jobs: list[tuple[str, torch.nn.Module, tuple[torch.Tensor, ...]]] = [
        ("encoder", encoder, (images, state, ids, mask)), ("sampler", sampler, (context, cmask, state, noise))]
    if world_model is not None:
        wm_graph = WorldModelGraph(world_model.eval(), policy.action_mean, policy.action_std).eval()
        jobs.append(("world_model", wm_graph, (z, actions)))
    for name, module, args in jobs:
        path = out / f"{name}.onnx"
        _trace(module, args, path, name, opset)
        _annotate(path, name, meta)
        meta["graphs"][name] = {"file": path.name, "sha256": sha256_file(path), "inputs": GRAPH_IO[name]["inputs"],
                                "outputs": GRAPH_IO[name]["outputs"], "dynamic_axis": DYNAMIC_AXIS[name]}
    stale = out / "world_model.onnx"
    if world_model is None and stale.exists():
        stale.unlink()
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / META_FILE)
    return load_export(out)


def export_checkpoints(policy_dir: Path, out: Path, wm_dir: Path | None = None, steps: int | None = None,
                       opset: int = DEFAULT_OPSET) -> ExportInfo:
    """Export from checkpoint directories (safetensors + JSON)."""
    policy, _, _ = load_checkpoint(Path(policy_dir), expect="policy")
    wm = None
    if wm_dir is not None:  # it normalises chunks as the policy whose latent it was trained in: that one only
        check_world_model_encoder(wm_dir, policy_dir)
        wm, _, _ = load_checkpoint(Path(wm_dir), expect="world_model")
    assert isinstance(policy, FlarePolicy) and (wm is None or isinstance(wm, LatentWorldModel))
    sources = {"policy": str(policy_dir), **({"world_model": str(wm_dir)} if wm_dir is not None else {})}
    return export_models(policy, out, wm, steps, opset, sources)


def load_export(directory: Path, verify_hashes: bool = True) -> ExportInfo:
    """Read `export.json`; every listed graph must exist and (by default) match its recorded SHA-256."""
    directory = Path(directory)
    path = directory / META_FILE
    if not directory.is_dir():
        raise OnnxModelError(f"ONNX export directory {directory} does not exist (run `wm-vla export` first)")
    if not path.is_file():
        raise OnnxModelError(f"{directory} is not a wm_vla ONNX export (no {META_FILE}; run `wm-vla export`)")
    try:
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise OnnxModelError(f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        spec = ModelSpec.from_json(meta["spec"])
        graphs = meta["graphs"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise OnnxModelError(f"{path} is not a valid export description: {exc}") from exc
    for name in ("encoder", "sampler"):
        if name not in graphs:
            raise OnnxModelError(f"{path} lists no {name} graph")
    for name, g in graphs.items():
        file = directory / g["file"]
        if not file.is_file():
            raise OnnxModelError(f"{directory}: the {name} graph {g['file']} is missing (re-run `wm-vla export`)")
        for part in (file, file.with_name(file.name + ".data")):  # the graph and its external-weights side file
            kind = pickle_kind(part)
            if kind:
                raise OnnxModelError(refusal(part, kind, "an ONNX file"))
        if verify_hashes and sha256_file(file) != g["sha256"]:
            raise OnnxModelError(f"{file} does not match the SHA-256 recorded in {META_FILE}: the file is corrupt or was "
                                 "replaced; re-run `wm-vla export`")
    return ExportInfo(directory, spec, meta)
