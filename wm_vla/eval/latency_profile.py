"""`wm-vla latency profile`: per-stage decision latency per (backend, precision, K, denoising steps).

Stages, in the order a decision runs them (STAGES); which are measured is recorded in every report:
  capture     sim: MuJoCo render of the policy's cameras; arm: JPEG decode of one camera-sized frame per camera
              (a CompressedImage from a real camera)                                              measured
  preprocess  frames -> model input (resize to the policy's image size, float [0, 1])            measured
  encode, sample, wm_rollout, score                                                               measured
  wm_encode   the world model's own encoder pass, when it ranks in another policy's latent        measured with a
              (`wm_encoder`; the second encode vla_node runs)                                     wm_encoder
  executor    chunk executor submit + first target (wm_vla.runtime.executor, when installed)     measured or
              not measured (the executor arrives with issue #5; reported as such)
  publish     message serialisation and DDS: measured by the ROS nodes, not here                 not measured
The decision time the budget applies to (`decision`) is preprocess + encode + sample (+ wm_encode) + wm_rollout +
score (+ the executor when measured): what the nodes do per decision once a frame is in memory; `end_to_end` adds capture.

Configurations are measured interleaved (every round visits each configuration in a fresh random order) on the
same observation source, so ratios between them are meaningful on a noisy machine. Percentiles p50/p90/p99/max per
stage over `decisions` decisions per configuration, host RSS (peak and current), device memory (CUDA), process CPU
use and the load average. Writes OUT.json and OUT.png (stacked p50 stage bars per configuration, p99 markers).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.eval.plots import write_json
from wm_vla.runtime.backends.base import Backend, default_threads
from wm_vla.runtime.decision import DecisionPipeline
from wm_vla.runtime.errors import LatencyConfigError
from wm_vla.runtime.spec import candidate_noise

STAGES = ("capture", "preprocess", "encode", "sample", "wm_encode", "wm_rollout", "score", "executor", "publish")
DECISION_STAGES = ("preprocess", "encode", "sample", "wm_encode", "wm_rollout", "score", "executor")
PERCENTILES = (50, 90, 99)
ROBOTS = ("sim", "arm")
BACKENDS = ("onnxruntime", "torch", "tensorrt")


@dataclass(frozen=True)
class Config:
    backend: str
    precision: str
    k: int
    steps: int

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} K={self.k} steps={self.steps}"


@dataclass
class ProfileConfig:
    policy: str
    wm: str | None = None
    wm_encoder: str | None = None           # the policy whose latent the world model ranks in (None: the acting one's)
    robot: str = "sim"                      # sim: MuJoCo capture; arm: JPEG-decoded camera frames
    backends: tuple[str, ...] = ("onnxruntime",)
    precisions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per backend (default fp32; tensorrt fp16)
    ks: tuple[int, ...] = (1, 4, 16, 64)
    steps: tuple[int, ...] = (4, 8, 10)
    decisions: int = 500
    warmup: int = 3
    threads: int | None = None
    device: str = "cpu"
    onnx_cache: str | None = None           # exports per steps value are kept here (default: a temporary dir)
    engine_dir: str = "trt_engines"
    instruction: str = "touch the red cube"
    seed: int = 0
    progress: bool = True

    def validate(self) -> ProfileConfig:
        if self.robot not in ROBOTS:
            raise LatencyConfigError(f"robot must be one of {', '.join(ROBOTS)}, got {self.robot!r}")
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad or not self.backends:
            raise LatencyConfigError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
        if not self.ks or min(self.ks) < 1 or not self.steps or min(self.steps) < 1:
            raise LatencyConfigError("every K and every steps value must be >= 1")
        if self.decisions < 1 or self.warmup < 0:
            raise LatencyConfigError("decisions must be >= 1 and warmup >= 0")
        return self

    def configs(self) -> list[Config]:
        out = []
        for b in self.backends:
            for p in self.precisions.get(b) or (("fp16",) if b == "tensorrt" else ("fp32",)):
                out += [Config(b, p, k, s) for s in self.steps for k in self.ks]
        return out


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, float)
    out = {f"p{q}": round(float(np.percentile(a, q)), 3) for q in PERCENTILES}
    out.update(max=round(float(a.max()), 3), mean=round(float(a.mean()), 3))
    return out


# ----- observation sources -----------------------------------------------------------------------------------------
class _Source:
    """capture() -> raw frames per camera; preprocess(frames) -> (images (1, cams, 3, S, S), state (1, S))."""

    def __init__(self, robot: str, cameras: tuple[str, ...], image_size: int, state_dim: int, instruction: str,
                 seed: int) -> None:
        self.cameras, self.size, self.instruction = cameras, image_size, instruction
        rng = np.random.default_rng(seed)
        self.state = rng.standard_normal(state_dim).astype(np.float32)
        self.world = None
        if robot == "sim":
            from wm_vla.sim.registry import make_world

            self.world = make_world("arm", image_size=image_size)
            obs = self.world.reset(seed)
            missing = [c for c in cameras if c not in obs.images]
            if missing:
                raise LatencyConfigError(f"the sim arm world has no camera(s) {missing} the policy needs")
        else:
            import cv2

            from wm_vla.robots import load_profile

            cam = load_profile("arm").cameras[0]
            frame = rng.integers(0, 256, (cam.height // 8, cam.width // 8, 3), np.uint8)
            frame = cv2.resize(frame, (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)  # camera-like texture
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            self.jpeg = jpeg

    def capture(self) -> dict[str, np.ndarray]:
        if self.world is not None:
            return self.world.observe().images
        import cv2

        return {c: cv2.cvtColor(cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for c in self.cameras}

    def preprocess(self, frames: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from wm_vla.eval.closed_loop import obs_batch
        from wm_vla.sim.world import Observation

        batch = obs_batch(Observation(frames, self.state, self.instruction, 0.0), self.cameras, self.size)
        return batch.images.numpy(), batch.state.numpy()

    def close(self) -> None:
        if self.world is not None:
            self.world.close()


def _executor_stage(action_dim: int, fps: float) -> Callable[[np.ndarray], None] | None:
    """The chunk executor's per-decision work (submit the chunk, compute the first target), or None if absent."""
    try:
        from wm_vla.runtime.executor import ChunkExecutor, ExecutorConfig  # type: ignore[import-not-found]
    except ImportError:
        return None
    executor = ChunkExecutor(ExecutorConfig(action_dt=1.0 / fps, action_dim=action_dim))

    def run(chunk: np.ndarray) -> None:
        now = time.monotonic()
        executor.submit(chunk, now, now)
        executor.target(now)

    return run


# ----- backends per configuration ----------------------------------------------------------------------------------
class _Backends:
    """One backend per (backend, precision, steps), built lazily; exports per steps cached in `root`. With a
    `wm_encoder`, the policy's backends carry no world model; `get_wm` gives, per (backend, precision), that encoder
    with the world model (an export of its own), as vla_node + world_model_node run them."""

    def __init__(self, cfg: ProfileConfig, threads: int) -> None:
        from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint

        self.cfg, self.threads = cfg, threads
        self.policy = load_checkpoint(Path(cfg.policy), expect="policy")[0]
        if cfg.wm:  # a world model from another policy's latent would be timed on the wrong inputs (or not run)
            check_world_model_encoder(cfg.wm, cfg.wm_encoder or cfg.policy)
        wm = load_checkpoint(Path(cfg.wm), expect="world_model")[0] if cfg.wm else None
        self.encoder = load_checkpoint(Path(cfg.wm_encoder), expect="policy")[0] if cfg.wm_encoder and wm else None
        self.wm, self.encoder_wm = (None, wm) if self.encoder is not None else (wm, None)
        self._tmp = None if cfg.onnx_cache else tempfile.TemporaryDirectory(prefix="wm_vla_profile_")
        self.root = Path(cfg.onnx_cache or self._tmp.name)  # type: ignore[union-attr]
        self.built: dict[tuple[str, str, int], Backend] = {}
        self.built_wm: dict[tuple[str, str], Backend] = {}

    def export_dir(self, steps: int | None) -> Path:
        """An export of the policy (+ WM) with `steps` denoising steps, reused when its sources and steps match;
        steps None: the wm_encoder + world model export (its trained steps; only its encoder and rollout run)."""
        from wm_vla.runtime.errors import OnnxModelError
        from wm_vla.runtime.export import export_models, load_export

        if steps is None:
            assert self.encoder is not None and self.encoder_wm is not None
            out, policy, wm, source = self.root / "wm_encoder", self.encoder, self.encoder_wm, self.cfg.wm_encoder
            steps = self.encoder.cfg.denoise_steps
        else:
            out, policy, wm, source = self.root / f"steps{steps}", self.policy, self.wm, self.cfg.policy
        sources = {"policy": str(source), **({"world_model": str(self.cfg.wm)} if wm is not None else {})}
        try:
            info = load_export(out)
            if info.spec.steps == steps and info.meta.get("sources") == sources:
                return out
        except OnnxModelError:
            pass
        export_models(policy, out, wm, steps=steps, sources=sources)
        return out

    def get(self, backend: str, precision: str, steps: int) -> Backend:
        key = (backend, precision, steps)
        if key not in self.built:
            self.built[key] = self._make(backend, precision, steps)
        return self.built[key]

    def get_wm(self, backend: str, precision: str) -> Backend | None:
        """The wm_encoder + world model backend of this kind, or None without a wm_encoder."""
        if self.encoder is None:
            return None
        key = (backend, precision)
        if key not in self.built_wm:
            self.built_wm[key] = self._make(backend, precision, None)
        return self.built_wm[key]

    def _make(self, backend: str, precision: str, steps: int | None) -> Backend:
        device = self.cfg.device
        if backend == "torch":
            from wm_vla.runtime.backends.torch_backend import TorchBackend

            if steps is None:
                return TorchBackend(self.encoder, self.encoder_wm, device)
            return TorchBackend(self.policy, self.wm, device, steps)
        if backend == "onnxruntime":
            from wm_vla.runtime.backends.ort_backend import OrtBackend

            return OrtBackend(self.export_dir(steps), device, self.threads)
        from wm_vla.runtime.backends.trt_backend import TrtBackend

        kmax = max(64, *self.cfg.ks)
        return TrtBackend(self.export_dir(steps), self.cfg.engine_dir, precision,
                          device if device != "cpu" else "cuda", (1, 16, kmax))

    def close(self) -> None:
        for b in (*self.built.values(), *self.built_wm.values()):
            b.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _memory() -> dict[str, float]:
    import psutil

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:  # pragma: no cover
        pass
    return out


def run_profile(cfg: ProfileConfig) -> dict[str, Any]:
    """Measure every configuration interleaved; returns the report (rows, stage status, memory, CPU load)."""
    import psutil
    import torch

    cfg.validate()
    threads = cfg.threads or default_threads()
    torch.set_num_threads(threads)
    backends = _Backends(cfg, threads)
    configs = cfg.configs()
    spec0 = backends.policy.cfg
    source = _Source(cfg.robot, tuple(spec0.cameras), spec0.image_size, spec0.state_dim, cfg.instruction, cfg.seed)
    executor = _executor_stage(spec0.action_dim, float(spec0.fps))
    status = {s: "measured" for s in STAGES}
    status["executor"] = "measured" if executor else "not measured: no chunk executor on this branch (issue #5)"
    status["publish"] = "not measured: serialisation and DDS are measured by the ROS nodes"
    if not cfg.wm:
        status["wm_rollout"] = status["score"] = "not measured: no world model given (policy only)"
    if backends.encoder is None:
        status["wm_encode"] = ("not measured: the world model ranks in the policy's own latent (no wm_encoder)"
                               if cfg.wm else "not measured: no world model given (policy only)")
    try:
        pipes: dict[Config, DecisionPipeline] = {}
        rss_after: dict[Config, dict[str, float]] = {}
        from wm_vla.eval.latency_bench import _penalty

        penalty = _penalty("arm", spec0.action_dim)
        for c in configs:
            backend = backends.get(c.backend, c.precision, c.steps)
            pipes[c] = DecisionPipeline(backend, penalty, wm_backend=backends.get_wm(c.backend, c.precision))
            rss_after[c] = _memory()
        noise = {k: candidate_noise(spec0.horizon, spec0.action_dim, k, cfg.seed) for k in cfg.ks}
        rank = cfg.wm is not None

        def decide(c: Config) -> dict[str, float]:
            t0 = time.perf_counter()
            frames = source.capture()
            t1 = time.perf_counter()
            images, state = source.preprocess(frames)
            t2 = time.perf_counter()
            d = pipes[c].decide(images, state, cfg.instruction, noise[c.k], rank=rank)
            ms = {"capture": 1e3 * (t1 - t0), "preprocess": 1e3 * (t2 - t1)}
            ms.update({s: v for s, v in d.stage_ms.items() if s != "total"})
            if executor is not None:
                t3 = time.perf_counter()
                executor(d.chunk)
                ms["executor"] = 1e3 * (time.perf_counter() - t3)
            ms["decision"] = sum(ms[s] for s in DECISION_STAGES if s in ms)
            ms["end_to_end"] = ms["decision"] + ms["capture"]
            return ms

        for c in configs:
            for _ in range(cfg.warmup):
                decide(c)
        samples: dict[Config, list[dict[str, float]]] = {c: [] for c in configs}
        order = np.random.default_rng(cfg.seed + 1)
        proc = psutil.Process()
        load0, cpu0, wall0 = os.getloadavg(), proc.cpu_times(), time.perf_counter()
        psutil.cpu_percent(None)
        report_every = max(1, cfg.decisions // 10)
        for it in range(cfg.decisions):
            for i in order.permutation(len(configs)):
                samples[configs[i]].append(decide(configs[i]))
            if cfg.progress and (it + 1) % report_every == 0:
                print(f"  round {it + 1}/{cfg.decisions} ({time.perf_counter() - wall0:.0f} s)", flush=True)
        wall = time.perf_counter() - wall0
        cpu1 = proc.cpu_times()
        cpu = {"process_cores_busy": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 2),
               "system_cpu_percent": psutil.cpu_percent(None), "loadavg_start": [round(x, 2) for x in load0],
               "loadavg_end": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(), "wall_s": round(wall, 1)}
        rows = []
        for c in configs:
            s = samples[c]
            stages = {name: percentiles([x[name] for x in s]) for name in (*STAGES, "decision", "end_to_end")
                      if name in s[0]}
            rows.append({"backend": c.backend, "precision": c.precision, "k": c.k, "steps": c.steps, "ranked": rank,
                         "device": pipes[c].backend.device, "describe": pipes[c].backend.describe(), "n": len(s),
                         "decision_ms": stages.pop("decision"), "end_to_end_ms": stages.pop("end_to_end"),
                         "stages_ms": stages, "memory_after_load": rss_after[c]})
        import onnxruntime

        from wm_vla.eval.latency_bench import _cpu_name

        return {"rows": rows, "stage_status": status, "decision_stages": list(DECISION_STAGES),
                "memory": _memory(), "cpu": cpu,
                "meta": {"policy": cfg.policy, "wm": cfg.wm, "wm_encoder": cfg.wm_encoder, "robot": cfg.robot, "threads": threads,
                         "decisions": cfg.decisions, "warmup": cfg.warmup, "interleaved": True,
                         "preset": spec0.preset, "image_size": spec0.image_size, "horizon": spec0.horizon,
                         "trained_steps": spec0.denoise_steps, "exec_horizon": spec0.exec_horizon, "fps": spec0.fps,
                         "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "cpu": _cpu_name(),
                         "onnx_cache": str(backends.root) if cfg.onnx_cache else "(temporary)"}}
    finally:
        source.close()
        backends.close()


def measured_stages(report: dict[str, Any]) -> list[str]:
    return [s for s in STAGES if report["stage_status"].get(s) == "measured"]


def print_table(report: dict[str, Any]) -> None:
    """A rich table: p50 per measured stage, decision p50/p90/p99/max, per configuration."""
    from rich.console import Console
    from rich.table import Table

    stages = measured_stages(report)
    meta = report["meta"]
    table = Table(title=f"decision latency (ms), {meta['preset']} preset, robot {meta['robot']}, "
                        f"{meta['threads']} threads, n={meta['decisions']} per row; stage columns are p50")
    for col in ("backend", "prec", "K", "steps", *stages, "dec p50", "p90", "p99", "max"):
        table.add_column(col, justify="left" if col in ("backend", "prec") else "right")
    for r in report["rows"]:
        d = r["decision_ms"]
        table.add_row(r["backend"], r["precision"], str(r["k"]), str(r["steps"]),
                      *(f"{r['stages_ms'][s]['p50']:.2f}" for s in stages),
                      *(f"{d[q]:.1f}" for q in ("p50", "p90", "p99", "max")))
    console = Console(width=200)
    console.print(table)
    for s, why in report["stage_status"].items():
        if why != "measured":
            console.print(f"  {s}: {why}")
    m, c = report["memory"], report["cpu"]
    console.print(f"  host RSS {m['rss_mb']} MB (peak {m['peak_rss_mb']} MB); this process kept "
                  f"{c['process_cores_busy']} of {c['cores']} cores busy, system CPU {c['system_cpu_percent']}%, "
                  f"load average {c['loadavg_start'][0]} -> {c['loadavg_end'][0]}")


def write_profile(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.png: one stacked bar (p50 per measured stage) per configuration, decision p99 as a marker."""
    json_path, png_path = write_json(report, out)
    import matplotlib.pyplot as plt

    rows, stages = report["rows"], measured_stages(report)
    short = {"onnxruntime": "ort", "tensorrt": "trt"}
    labels = [f"{short.get(r['backend'], r['backend'])} {r['precision']}\nK={r['k']} s={r['steps']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.6 * len(rows)), 4.4))
    bottom = np.zeros(len(rows))
    colors = plt.get_cmap("tab10")
    for i, s in enumerate(stages):
        vals = np.array([r["stages_ms"][s]["p50"] for r in rows])
        ax.bar(range(len(rows)), vals, 0.7, bottom=bottom, label=s, color=colors(i))
        bottom += vals
    ax.scatter(range(len(rows)), [r["end_to_end_ms"]["p99"] for r in rows], marker="_", s=200, color="black",
               label="end-to-end p99", zorder=3)
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("ms (stacked stage p50)")
    meta = report["meta"]
    ax.set_title(f"per-stage latency, {meta['preset']} preset, robot {meta['robot']}, {meta['threads']} threads\n"
                 f"{meta['decisions']} decisions per configuration, interleaved", fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
