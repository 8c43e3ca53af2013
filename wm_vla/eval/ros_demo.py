"""`wm-vla demo`: the full stack over ROS 2 on the sim, N episodes with GPC-RANK and N with the single sample.

Each configuration starts the bringup plan of `robot:=sim` (sim_robot, perception, vla, world_model nodes as
subprocesses over real DDS), runs the episode client (`python -m sim_node.episodes`) for N seeded episodes, and
stops the stack. Both configurations use the same seeds and noise (candidate 0 of K is the single sample).
Latency is camera stamp -> command receipt (the commands carry the observation stamp), per chunk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wm_vla.bringup import BringupArgs, NodeSpec, build_plan
from wm_vla.eval.closed_loop import HELDOUT_SEED
from wm_vla.eval.node_cpu import TOTAL, NodeCpuSampler
from wm_vla.eval.plots import Bar, write_json_and_bars
from wm_vla.eval.stats import median_ratio_ci, wilson
from wm_vla.launcher import Stack


@dataclass
class DemoConfig:
    episodes: int = 10
    k: int = 16
    seed: int = HELDOUT_SEED
    backend: str = "torch"
    denoise_steps: int = 0      # Euler steps per sample (0: the policy config's)
    policy: str | None = None
    world_model: str | None = None
    wm_encoder: str | None = None  # the world model's encoder policy (None: the shipped one with the shipped models)
    out: str = "outputs/demo"
    episode_timeout_s: float = 60.0
    rate_scale: float = 1.0     # < 1 runs the sim on its own /clock (latencies then in sim time)
    domain_id: int | None = None  # None: $ROS_DOMAIN_ID if set, else a private one (see demo_domain)
    params_file: str | None = None  # YAML node parameter overrides (wm_vla.bringup), both stacks


def demo_domain() -> int:
    """A DDS domain of its own for the demo (101-200, from the pid) unless the user set ROS_DOMAIN_ID: a second
    sim or robot on the default domain 0 would otherwise feed this stack its images and joint states."""
    return int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID") else 101 + os.getpid() % 100


def demo_plan(cfg: DemoConfig, rank: bool) -> list[NodeSpec]:
    """The sim stack of one configuration (ranked: K candidates and the world model; else K=1, passthrough)."""
    # the sim's autostarted episode 0 (seed - 1) warms the stack up, uncounted; the counted ones, reset after it,
    # are episodes 1..N with seeds cfg.seed.. (see run_config)
    return build_plan(BringupArgs(robot="sim", backend=cfg.backend, k=cfg.k if rank else 1, rank=rank, seed=cfg.seed - 1,
                                  denoise_steps=cfg.denoise_steps, policy=cfg.policy, world_model=cfg.world_model,
                                  wm_encoder=cfg.wm_encoder, use_sim_time=cfg.rate_scale != 1.0, rate_scale=cfg.rate_scale,
                                  params_file=cfg.params_file))


def run_config(cfg: DemoConfig, rank: bool, log_dir: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One stack start, N episodes, one stop. The sim's autostarted episode only warms the stack up: the client waits
    for its first command computed from an observation (every DDS pair between the nodes matched), then resets for
    each counted episode, so no counted decision measures the stack's start-up. Returns the episodes and the cores
    each node kept busy while they ran (median over 1 s intervals, `wm_vla.eval.node_cpu`)."""
    sim_time = cfg.rate_scale != 1.0
    plan = demo_plan(cfg, rank)
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(cfg.domain_id if cfg.domain_id is not None else demo_domain())}
    with Stack(plan, log_dir=log_dir, env=env) as stack, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "episodes.json"
        cmd = [sys.executable, "-m", "sim_node.episodes", "--episodes", str(cfg.episodes), "--timeout",
               str(cfg.episode_timeout_s), "--out", str(out), "--warm-up",
               *(["--use-sim-time"] if sim_time else [])]
        cpus = harness_cpus(plan)
        with NodeCpuSampler(stack.cpu_seconds) as cpu:  # the episode client runs beside the sim, off the policy's CPU
            proc = subprocess.run(cmd, env=stack.env, check=False,
                                  preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        if proc.returncode != 0 or not out.is_file():
            logs = "\n".join(f"--- {n}: {stack.log(n)[-1500:]}" for n in stack.procs)
            raise RuntimeError(f"episode client failed (exit {proc.returncode}); node logs:\n{logs}")
        if stack.failed():
            raise RuntimeError(f"nodes exited during the demo: {stack.failed()}")
        return json.loads(out.read_text()), cpu.cores_busy()


def harness_cpus(plan: list[NodeSpec]) -> tuple[int, ...]:
    """The CPUs of the plan's nodes other than vla_node (their `cpu_affinity`), for the demo's own helper processes;
    () when the plan pins nothing."""
    from wm_vla.cpus import parse_cpu_list

    lists = {str(n.parameters.get("cpu_affinity", "")) for n in plan if n.name != "vla_node" and not n.external}
    lists.discard("")
    return parse_cpu_list(lists.pop()) if len(lists) == 1 else ()


def decision_period_s(policy_dir: str, profile_rate_hz: float) -> float:
    """vla_node's default decision period: the policy's execution horizon at the robot's policy rate."""
    cfg = json.loads((Path(policy_dir) / "config.json").read_text())["config"]
    return int(cfg.get("exec_horizon", cfg["horizon"])) / profile_rate_hz


def reference_decision(cfg: DemoConfig) -> tuple[Any, Any, Any, float]:
    """What the in-process reference decides with, set up as the nodes run (one thread): the backend (policy + world
    model), the arm world, the DecisionPipeline (GPC-RANK with kinematic penalties) and vla_node's decision period."""
    import torch

    from wm_vla.runtime.decision import DecisionPipeline
    from wm_vla.runtime.loading import open_backend
    from wm_vla.runtime.ranker import KinematicPenalty
    from wm_vla.sim.registry import make_world
    from wm_vla.training.pipeline import default_checkpoints, is_shipped, resolve_wm_encoder

    torch.set_num_threads(1)  # like the nodes (threads: 1)
    policy, wm = default_checkpoints()
    world_model = cfg.world_model or str(wm)
    encoder = resolve_wm_encoder(cfg.wm_encoder, is_shipped(cfg.world_model))
    backend = open_backend(cfg.backend, cfg.policy or str(policy), None if encoder else world_model, threads=1,
                           steps=cfg.denoise_steps or None).backend
    wm_backend = open_backend(cfg.backend, encoder, world_model, threads=1).backend if encoder else None
    world = make_world("arm")
    pipe = DecisionPipeline(backend, KinematicPenalty(world.profile), wm_backend=wm_backend)
    return backend, world, pipe, decision_period_s(cfg.policy or str(policy), world.profile.policy_rate_hz)


@dataclass
class FixedDecision:
    """The reference decision on one fixed arm observation (the benchmarks' workload): `decide(i)` runs it with
    candidate noise seed i and returns its total ms."""

    backend: Any
    world: Any
    obs: Any
    period_s: float  # the policy's decision period
    decide: Callable[[int], float]

    def close(self) -> None:
        self.world.close()
        self.backend.close()


def fixed_decision(cfg: DemoConfig, warm_up: int = 3) -> FixedDecision:
    """`reference_decision` on the arm's observation of seed 1 000 000, run `warm_up` times before it is returned."""
    from wm_vla.eval.closed_loop import obs_batch
    from wm_vla.runtime.spec import candidate_noise

    backend, world, pipe, period = reference_decision(cfg)
    spec = backend.spec
    obs = world.reset(1_000_000)
    batch = obs_batch(obs, spec.cameras, spec.image_size)
    images, state = batch.images.numpy(), batch.state.numpy()

    def decide(i: int) -> float:
        noise = candidate_noise(spec.horizon, spec.action_dim, cfg.k, i)
        return float(pipe.decide(images, state, obs.instruction, noise).stage_ms["total"])

    for i in range(warm_up):
        decide(i)
    return FixedDecision(backend, world, obs, period, decide)


def inprocess_decision_ms(cfg: DemoConfig, n: int = 30, paced: bool = True) -> list[dict[str, float]]:
    """The same decision (encode, K samples, world model, GPC-RANK) in one process on sim observations: per decision,
    its stage times (ms: encode, sample, wm_rollout, score, total).

    `paced`: one decision per decision period, the CPU idle in between, as vla_node decides (one per chunk). Back to
    back (`paced=False`) the same decision was 3-14 % faster on the 2-vCPU VM (`benchmarks/decision_pacing.py`),
    which is the machine, not ROS, so the ROS/in-process ratio compares paced with paced."""
    from wm_vla.eval.closed_loop import obs_batch
    from wm_vla.runtime.spec import candidate_noise

    backend, world, pipe, period = reference_decision(cfg)
    period = period if paced else 0.0
    spec = backend.spec
    times: list[dict[str, float]] = []
    start = time.perf_counter()
    for i in range(n + 3):
        obs = world.reset(cfg.seed + i % max(1, cfg.episodes))
        batch = obs_batch(obs, spec.cameras, spec.image_size)
        noise = candidate_noise(spec.horizon, spec.action_dim, cfg.k, i)
        if i >= 3:  # after the warm-up: one decision per period
            time.sleep(max(0.0, start + period - time.perf_counter()))
        start = time.perf_counter()
        decision = pipe.decide(batch.images.numpy(), batch.state.numpy(), obs.instruction, noise)
        if i >= 3:
            times.append(decision.stage_ms)
    world.close()
    backend.close()
    return times


def inprocess_beside_stack(cfg: DemoConfig, log_dir: Path, n: int = 10, settle_s: float = 8.0) -> list[dict[str, float]]:
    """The paced in-process decision taken while the single-sample stack runs a few episodes (episodes not
    counted): the same decision under the load the stack's other work puts on the machine (the sim stepping and
    rendering, perception, the control loop, DDS). If the stack finishes first, the rest is measured on a quiet
    machine, which can only make this reference faster (the ratio to it larger)."""
    import threading

    side = replace(cfg, episodes=4, episode_timeout_s=20.0)
    failed: list[BaseException] = []

    def stack() -> None:
        try:
            run_config(side, False, log_dir)
        except (RuntimeError, OSError) as exc:
            failed.append(exc)

    worker = threading.Thread(target=stack, daemon=True)
    worker.start()
    time.sleep(settle_s)  # nodes configured, episodes running
    try:
        return inprocess_decision_ms(cfg, n=n)
    finally:
        worker.join(timeout=180.0)
        if failed:
            print(f"[demo] warning: the stack beside the loaded in-process reference failed: {failed[0]}", flush=True)


def summarize(name: str, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    rate = wilson(sum(e["success"] for e in episodes), len(episodes))
    lat = [x for e in episodes for x in e["latency_ms"]]
    dec = [x for e in episodes for x in e.get("decision_ms", [])]
    events: dict[str, int] = {}
    for e in episodes:
        events[e["event"] or "none"] = events.get(e["event"] or "none", 0) + 1
    return {"name": name, "episodes": len(episodes), "successes": rate.successes, "success_rate": rate.value,
            "ci95": [rate.low, rate.high], "events": events,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat else float("nan"),
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat else float("nan"), "chunks": len(lat),
            "decision_ms_p50": _p(dec, 50), "decision_ms_p99": _p(dec, 99),
            "decision_breakdown_ms_p50": decision_breakdown(episodes), "per_episode": episodes}


def decision_breakdown(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Where a decision's time goes over ROS (p50s, ms). Per decision, from its RankingResult: camera stamp ->
    candidates at world_model_node (`candidates_age`: perception, vla_node, two DDS hops, waiting for the newest
    frame), waiting for the ranking worker (`queue`), ranking (`ranking`), publishing and delivering the RankingResult
    (`result_hop`). `vla_inference` is vla_node's own p50 (its /diagnostics; a part of `candidates_age`, but from
    another sample of decisions: p50s of different samples are not subtracted)."""
    stages = [r for e in episodes for r in e.get("rank_stages", []) if "total" in r and "candidates_age" in r]
    if not stages:
        return {}
    parts = {"candidates_age": _p([r["candidates_age"] for r in stages], 50),
             "queue": _p([r["queue"] for r in stages], 50), "ranking": _p([r["total"] for r in stages], 50),
             "result_hop": _p([r["decision"] - r["candidates_age"] - r["queue"] - r["total"] for r in stages], 50),
             "decision": _p([r["decision"] for r in stages], 50)}
    vla = [e["vla_stage_ms"]["total_ms_p50"] for e in episodes if "total_ms_p50" in e.get("vla_stage_ms", {})]
    if vla:
        parts["vla_inference"] = float(np.median(vla))
    return parts


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    for rank in (True, False):  # a bad params file or argument fails here, before anything runs or is written
        demo_plan(cfg, rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = {}
    # the in-process reference is taken before and after the ROS runs: a shared machine's speed drifts by tens of
    # percent over minutes, and one side of a ratio taken at another time would carry that drift
    stages = inprocess_decision_ms(cfg, n=15)
    back_to_back = inprocess_decision_ms(cfg, n=10, paced=False)
    for name, rank in (("ranked", True), ("single", False)):
        domain = cfg.domain_id if cfg.domain_id is not None else demo_domain()
        print(f"[demo] {name}: starting the ROS 2 stack (K={cfg.k if rank else 1}) for {cfg.episodes} episodes "
              f"on ROS_DOMAIN_ID={domain}", flush=True)
        episodes, cores = run_config(cfg, rank, out / f"logs_{name}")
        rows[name] = {**summarize(name, episodes), "node_cores_busy": cores}
        r = rows[name]
        print(f"[demo] {name}: {r['successes']}/{r['episodes']} successes, camera->command p50 "
              f"{r['latency_ms_p50']:.1f} ms p99 {r['latency_ms_p99']:.1f} ms", flush=True)
        if cores:
            print(f"[demo] {name}: cores busy per node (median of 1 s intervals; {os.cpu_count()} CPUs): " +
                  ", ".join(f"{n} {v:.2f}" for n, v in cores.items() if n != TOTAL) +
                  f"; all nodes {cores.get(TOTAL, float('nan')):.2f}", flush=True)
    ranked, single = rows["ranked"], rows["single"]
    stages += inprocess_decision_ms(cfg, n=15)
    back_to_back += inprocess_decision_ms(cfg, n=10, paced=False)
    inproc = [s["total"] for s in stages]
    inproc_b2b = _p([s["total"] for s in back_to_back], 50)
    loaded = inprocess_beside_stack(cfg, out / "logs_loaded_reference") if cfg.rate_scale == 1.0 else []
    inproc_loaded = _p([s["total"] for s in loaded], 50)
    inproc_parts = {"inference": _p([s["encode"] + s["sample"] for s in stages], 50),
                    "ranking": _p([s.get("wm_rollout", 0.0) + s.get("score", 0.0) for s in stages], 50),
                    "decision": _p(inproc, 50)}
    # on the sim clock the ROS decision time is in sim time: no ratio to a wall-clock in-process time
    ratio = ranked["decision_ms_p50"] / _p(inproc, 50) if cfg.rate_scale == 1.0 else float("nan")
    ratio_b2b = ranked["decision_ms_p50"] / inproc_b2b if cfg.rate_scale == 1.0 else float("nan")
    ros_decisions = [x for e in ranked["per_episode"] for x in e.get("decision_ms", [])]
    ratio_ci = median_ratio_ci(ros_decisions, inproc) if cfg.rate_scale == 1.0 else (float("nan"), float("nan"))
    print(f"[demo] decision camera->RankingResult over ROS p50 {ranked['decision_ms_p50']:.1f} ms vs in-process "
          f"{_p(inproc, 50):.1f} ms (one decision per period, as the stack decides): ratio {ratio:.2f} (95% CI "
          f"{ratio_ci[0]:.2f}-{ratio_ci[1]:.2f}, bootstrap over {len(ros_decisions)} ROS and {len(inproc)} in-process "
          f"decisions: this run's sampling noise, not the machine's drift between runs); in-process back to back "
          f"{inproc_b2b:.1f} ms: ratio {ratio_b2b:.2f}", flush=True)
    ratio_loaded = ranked["decision_ms_p50"] / inproc_loaded if loaded else float("nan")
    if loaded:
        print(f"[demo] the same in-process decision while the single-sample stack runs beside it: {inproc_loaded:.1f} ms: "
              f"ratio {ratio_loaded:.2f} (what ROS adds, without what the machine's other work costs)", flush=True)
    parts = ranked["decision_breakdown_ms_p50"]
    nan = float("nan")
    node_ratio = nan
    if parts and cfg.rate_scale == 1.0:
        print(f"[demo] over ROS (p50 ms): camera->candidates at world_model_node {parts['candidates_age']:.1f} (vla_node "
              f"inference {parts.get('vla_inference', nan):.1f}), ranking queue {parts['queue']:.1f}, ranking "
              f"{parts['ranking']:.1f}, result publish+delivery {parts['result_hop']:.1f}; in-process: inference "
              f"{inproc_parts['inference']:.1f}, ranking {inproc_parts['ranking']:.1f}", flush=True)
        node_ratio = parts["decision"] / (parts.get("vla_inference", nan) + parts["ranking"])
        print(f"[demo] ROS decision / the nodes' own inference + ranking, same run (p50s): {node_ratio:.2f}: what "
              f"perception, DDS and waiting for the newest frame add", flush=True)
    report = {"episodes": cfg.episodes, "success_rate_ranked": ranked["success_rate"],
              "success_rate_single": single["success_rate"], "latency_ms_p50": ranked["latency_ms_p50"],
              "latency_ms_p99": ranked["latency_ms_p99"], "k": cfg.k, "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1],
              "backend": cfg.backend, "denoise_steps": cfg.denoise_steps or None,  # None: the policy's own
              "clock": "wall" if cfg.rate_scale == 1.0 else f"sim x{cfg.rate_scale}",
              "latency": "camera stamp -> command receipt, first command of each chunk, ranked stack",
              "decision_ms_ros_p50": ranked["decision_ms_p50"], "decision_ms_inprocess_p50": _p(inproc, 50),
              "decision_ratio_ros_over_inprocess": ratio, "decision_ratio_ros_over_inprocess_ci95": list(ratio_ci),
              "decision_ms_inprocess_back_to_back_p50": inproc_b2b,
              "decision_ms_inprocess_beside_stack_p50": inproc_loaded,
              "decision_ratio_ros_over_inprocess_beside_stack": ratio_loaded,
              "decision_ratio_ros_over_inprocess_back_to_back": ratio_b2b,
              "decision_ratio_ros_over_node_compute": node_ratio,
              "decision_breakdown_ms_p50": {"ros": parts, "inprocess": inproc_parts},
              "cpu_threads": os.cpu_count(), "wall_s": round(time.perf_counter() - t0, 1), "configs": [ranked, single]}
    bars = [Bar(f"{r['name']}\nK={cfg.k if r['name'] == 'ranked' else 1}", r["successes"], r["episodes"],
                r["ci95"][0], r["ci95"][1], f"p50 {r['latency_ms_p50']:.0f} ms",
                "#4c78a8" if r["name"] == "ranked" else "#9d9d9d") for r in (ranked, single)]
    write_json_and_bars(report, bars, f"arm over ROS 2: success, seeds {cfg.seed}-{cfg.seed + cfg.episodes - 1}",
                        out / "report")
    return report
