"""Decision latency per backend and K: encode + sample K chunks (+ world-model rollout + GPC-RANK score).

All configurations of one run are measured in the same process and interleaved (each iteration visits every
(backend, K, ranked) configuration in a fresh random order), on the same observation and the same noise, so
ratios between rows are meaningful even on a noisy machine. Writes OUT.json (rows: backend, device, k, ranked,
p50_ms, p99_ms, n, plus per-stage medians) and OUT.png.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.eval.plots import write_json
from wm_vla.runtime.backends.base import Backend, default_threads
from wm_vla.runtime.decision import DecisionPipeline
from wm_vla.runtime.parity import agreement
from wm_vla.runtime.ranker import KinematicPenalty
from wm_vla.runtime.spec import candidate_noise

INSTRUCTION = "touch the red cube"


@dataclass
class BenchConfig:
    policy: str
    wm: str | None = None
    onnx: str | None = None            # existing export; default: export to a temporary directory
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    ks: tuple[int, ...] = (1, 4, 16, 64)
    iters: int = 50
    warmup: int = 3
    robot: str | None = "arm"          # kinematic penalty in the score ("none": progress/failure only)
    threads: int | None = None         # intra-op threads for every backend (default: OMP_NUM_THREADS or cores)
    device: str = "cpu"
    precision: str = "fp16"            # tensorrt
    engine_dir: str = "trt_engines"
    seed: int = 0
    out: str | None = None
    progress: bool = True
    wm_encoder: str | None = None      # the policy whose latent the world model ranks in: one more encoder pass


def _make_backend(name: str, cfg: BenchConfig, onnx_dir: Path | None, policy: Any, wm: Any, threads: int) -> Backend:
    if name == "torch":
        from wm_vla.runtime.backends.torch_backend import TorchBackend

        return TorchBackend(policy, wm, cfg.device)
    assert onnx_dir is not None
    if name == "onnxruntime":
        from wm_vla.runtime.backends.ort_backend import OrtBackend

        return OrtBackend(onnx_dir, cfg.device, threads)
    if name == "tensorrt":
        from wm_vla.runtime.backends.trt_backend import TrtBackend

        return TrtBackend(onnx_dir, cfg.engine_dir, cfg.precision, cfg.device if cfg.device != "cpu" else "cuda",
                          (1, 16, max(64, *cfg.ks)))
    raise ValueError(f"unknown backend {name!r}; choose from torch, onnxruntime, tensorrt")


def _penalty(robot: str | None, action_dim: int) -> KinematicPenalty | None:
    if not robot or robot == "none":
        return None
    from wm_vla.robots import load_profile

    profile = load_profile(robot)
    if len(profile.action.names) != action_dim:
        raise ValueError(f"robot {robot!r} has {len(profile.action.names)} actions, the policy {action_dim}")
    return KinematicPenalty(profile)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    import torch

    from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint
    from wm_vla.runtime.export import export_models, load_export

    if cfg.iters < 1 or not cfg.ks or min(cfg.ks) < 1:
        raise ValueError("iters and every K must be >= 1")
    threads = cfg.threads or default_threads()
    torch.set_num_threads(threads)
    policy, _, _ = load_checkpoint(Path(cfg.policy), expect="policy")
    if cfg.wm:
        check_world_model_encoder(cfg.wm, cfg.wm_encoder or cfg.policy)
    wm = load_checkpoint(Path(cfg.wm), expect="world_model")[0] if cfg.wm else None
    encoder = load_checkpoint(Path(cfg.wm_encoder), expect="policy")[0] if cfg.wm_encoder and wm is not None else None
    policy_wm = None if encoder is not None else wm
    tmp = [tempfile.TemporaryDirectory(prefix="wm_vla_bench_") for _ in range(2)]
    onnx_dir: Path | None = Path(cfg.onnx) if cfg.onnx else None
    needs_onnx = any(b != "torch" for b in cfg.backends)
    if onnx_dir is None and needs_onnx:
        onnx_dir = Path(tmp[0].name)
        export_models(policy, onnx_dir, policy_wm, sources={"policy": cfg.policy,
                                                            **({"world_model": cfg.wm} if policy_wm else {})})
    elif onnx_dir is not None:
        load_export(onnx_dir)
    wm_onnx = Path(tmp[1].name) if encoder is not None and needs_onnx else None
    if wm_onnx is not None:  # the world model with its encoder's normalisation, and that encoder
        export_models(encoder, wm_onnx, wm, sources={"policy": str(cfg.wm_encoder), "world_model": str(cfg.wm)})
    try:
        backends = {name: _make_backend(name, cfg, onnx_dir, policy, policy_wm, threads) for name in cfg.backends}
        wm_backends = ({name: _make_backend(name, cfg, wm_onnx, encoder, wm, threads) for name in cfg.backends}
                       if encoder is not None else {})
        return _measure(cfg, backends, threads, onnx_dir, wm_backends)
    finally:
        for t in tmp:
            t.cleanup()


def _measure(cfg: BenchConfig, backends: dict[str, Backend], threads: int, onnx_dir: Path | None,
             wm_backends: dict[str, Backend] | None = None) -> dict[str, Any]:
    """Decision times per (backend, K, ranked); `wm_backends`: per backend, the world model with its own encoder."""
    wm_backends = wm_backends or {}
    first = next(iter(backends.values()))
    spec = first.spec
    for name, b in backends.items():
        if b.spec.steps != spec.steps or b.spec.horizon != spec.horizon:
            raise ValueError(f"backend {name} runs a different sampler (steps/horizon) than {first.name}")
    penalty = _penalty(cfg.robot, spec.action_dim)
    pipes = {name: DecisionPipeline(b, penalty, wm_backend=wm_backends.get(name)) for name, b in backends.items()}
    rng = np.random.default_rng(cfg.seed)
    images = rng.random((1, len(spec.cameras), 3, spec.image_size, spec.image_size), dtype=np.float32)
    state = rng.standard_normal((1, spec.state_dim)).astype(np.float32)
    noise = {k: candidate_noise(spec.horizon, spec.action_dim, k, cfg.seed) for k in cfg.ks}
    ranked_opts = (False, True) if spec.has_world_model or wm_backends else (False,)
    configs = [(b, k, r) for b in backends for k in cfg.ks for r in ranked_opts]
    parity: dict[str, dict[str, float]] = {}
    for name, pipe in pipes.items():  # warm-up (+ agreement of the chunks with the first backend)
        for k in cfg.ks:
            for _ in range(cfg.warmup):
                for r in ranked_opts:
                    pipe.decide(images, state, INSTRUCTION, noise[k], rank=r)
            if name != first.name:
                ref = pipes[first.name].decide(images, state, INSTRUCTION, noise[k], rank=False)
                mine = pipe.decide(images, state, INSTRUCTION, noise[k], rank=False)
                parity.setdefault(name, {})[str(k)] = agreement(ref.actions, mine.actions).max_abs
    times: dict[tuple[str, int, bool], list[float]] = {c: [] for c in configs}
    stages: dict[tuple[str, int, bool], list[dict[str, float]]] = {c: [] for c in configs}
    order_rng = np.random.default_rng(cfg.seed + 1)
    t_start = time.perf_counter()
    for it in range(cfg.iters):
        for i in order_rng.permutation(len(configs)):
            b, k, r = configs[i]
            t0 = time.perf_counter()
            d = pipes[b].decide(images, state, INSTRUCTION, noise[k], rank=r)
            times[configs[i]].append(1e3 * (time.perf_counter() - t0))
            stages[configs[i]].append(d.stage_ms)
        if cfg.progress and (it + 1) % max(1, cfg.iters // 10) == 0:
            print(f"  iteration {it + 1}/{cfg.iters} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    rows = []
    for c in configs:
        b, k, r = c
        ms = np.asarray(times[c])
        stage_p50 = {s: round(float(np.median([x[s] for x in stages[c] if s in x])), 3)
                     for s in ("encode", "sample", "wm_encode", "wm_rollout", "score")
                     if any(s in x for x in stages[c])}
        rows.append({"backend": b, "device": backends[b].device, "k": k, "ranked": r,
                     "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
                     "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size), "stage_p50_ms": stage_p50})
    import onnxruntime
    import torch

    return {"rows": rows, "ratios": ratios(rows), "max_abs_actions_vs_first_backend": parity,
            "meta": {"policy": cfg.policy, "wm": cfg.wm, "wm_encoder": cfg.wm_encoder, "onnx": str(cfg.onnx or "(temporary export)"),
                     "backends": {n: b.describe() for n, b in backends.items()}, "threads": threads,
                     "iters": cfg.iters, "warmup": cfg.warmup, "steps": spec.steps, "horizon": spec.horizon,
                     "preset": spec.preset, "image_size": spec.image_size, "robot_penalty": cfg.robot,
                     "interleaved": True, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "cpu": _cpu_name()}}


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 ratios: each backend vs torch (same K, same ranked flag), and ranked vs policy-only (same backend, K)."""
    p50 = {(r["backend"], r["k"], r["ranked"]): r["p50_ms"] for r in rows}
    out: dict[str, dict[str, float]] = {}
    for (b, k, ranked), v in p50.items():
        if b != "torch" and ("torch", k, ranked) in p50:
            key = f"{b}/torch" + (" ranked" if ranked else " policy-only")
            out.setdefault(key, {})[str(k)] = round(v / p50[("torch", k, ranked)], 3)
        if ranked and (b, k, False) in p50:
            out.setdefault(f"{b} ranked/policy-only", {})[str(k)] = round(v / p50[(b, k, False)], 3)
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'backend':12s} {'device':8s} {'K':>4s} {'ranked':>6s} {'p50 ms':>9s} {'p99 ms':>9s} {'n':>5s}"]
    for r in report["rows"]:
        lines.append(f"{r['backend']:12s} {r['device']:8s} {r['k']:4d} {str(r['ranked']):>6s} {r['p50_ms']:9.2f} "
                     f"{r['p99_ms']:9.2f} {r['n']:5d}")
    for name, by_k in report["ratios"].items():
        lines.append(f"{name:32s} " + "  ".join(f"K={k}: {v:.3f}" for k, v in by_k.items()))
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.png (p50 per K, one bar per backend x ranked, p99 whiskers, log scale)."""
    json_path, png_path = write_json(report, out)
    import matplotlib.pyplot as plt

    rows = report["rows"]
    series = sorted({(r["backend"], r["ranked"]) for r in rows})
    ks = sorted({r["k"] for r in rows})
    width = 0.8 / max(1, len(series))
    palette = {"torch": "#9d9d9d", "onnxruntime": "#4c78a8", "tensorrt": "#54a24b"}
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(ks), 3.8))
    for i, (b, ranked) in enumerate(series):
        sel = {r["k"]: r for r in rows if r["backend"] == b and r["ranked"] == ranked}
        xs = [j + (i - (len(series) - 1) / 2) * width for j, k in enumerate(ks) if k in sel]
        p50 = [sel[k]["p50_ms"] for k in ks if k in sel]
        p99 = [sel[k]["p99_ms"] - sel[k]["p50_ms"] for k in ks if k in sel]
        ax.bar(xs, p50, width, yerr=[[0] * len(p99), p99], capsize=2, color=palette.get(b, "#f58518"),
               edgecolor="white", label=f"{b} {'GPC-RANK' if ranked else 'policy only'}", hatch="//" if ranked else None)
    ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
    ax.set_yscale("log")
    ax.set_ylabel("decision latency p50 (ms), whisker p99")
    meta = report["meta"]
    ax.set_title(f"decision latency, {meta['preset']} preset, {meta['steps']} steps, {meta['threads']} threads", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
