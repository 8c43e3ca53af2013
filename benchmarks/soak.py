"""Soak test: the sim stack (30 Hz camera, 50 Hz control, GPC-RANK on) for N minutes, episodes back to back.

Samples every node's RSS (psutil) and its /diagnostics counters every few seconds; reports RSS growth after the
warm-up, deadline misses (world_model_node control ticks later than 1.5 periods), dropped observations
(perception drops + stale/bad observations at the vla_node), success rate and crashed nodes. Writes OUT.json and
OUT.png (`wm_vla.eval.soak`). Exit code 1 when a node crashed or a criterion failed.

    python benchmarks/soak.py --minutes 30 --out outputs/bench/soak_30min     # the acceptance run (issue #9)
    python benchmarks/soak.py --minutes 30 --rt-priority 50 ...   # control thread SCHED_FIFO (root/CAP_SYS_NICE)
    python benchmarks/soak.py --minutes 3 --warmup-s 45 --out outputs/bench/soak_3min   # the CI version
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-s", type=float, default=120.0, help="RSS growth and ratios are measured after this")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--episode-timeout", type=float, default=60.0)
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="world_model_node control_rt_priority (SCHED_FIFO when allowed; 0 = normal scheduling)")
    ap.add_argument("--out", default="outputs/bench/soak")
    ap.add_argument("--domain-id", type=int, default=None,
                    help="ROS_DOMAIN_ID of the soak (default: $ROS_DOMAIN_ID, else a free-looking one from 120-219 so "
                         "that another stack on this machine cannot cross-talk)")
    args = ap.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None
                                      else os.environ.get("ROS_DOMAIN_ID", 120 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    import rclpy

    from sim_node.episodes import EpisodeClient, spin_in_thread
    from wm_vla.bringup import BringupArgs, build_plan
    from wm_vla.eval.soak import SoakSample, machine_counters, machine_info, plot_soak, summarize_soak
    from wm_vla.launcher import Stack
    from wm_vla.robots import load_profile

    extra = {"sim_robot": {"camera_hz": args.camera_hz}, "world_model_node": {"control_rt_priority": args.rt_priority}}
    plan = [dataclasses.replace(n, parameters={**n.parameters, **extra.get(n.name, {})})
            for n in build_plan(BringupArgs(robot="sim", k=args.k, rank=True))]
    control_hz = load_profile("arm").control_rate_hz
    out = Path(args.out)
    samples: list[SoakSample] = []
    episodes: list[dict[str, Any]] = []
    stop = threading.Event()
    with Stack(plan, log_dir=out.with_name(out.name + "_logs")) as stack:
        t_start = time.monotonic()
        procs = {name: psutil.Process(p.pid) for name, p in stack.procs.items()}

        def sampler() -> None:
            while not stop.wait(args.sample_s):
                rss = {}
                for name, proc in procs.items():
                    try:  # with its children: vla_node's sampler process holds the policy
                        family = [proc, *proc.children(recursive=True)]
                        rss[name] = sum(p.memory_info().rss for p in family) / 2**20
                    except psutil.Error:
                        continue
                with client.cond:  # the episode client keeps every node's latest /diagnostics values
                    counters = {k: dict(v) for k, v in client.node_values.items()}
                counters["machine"] = machine_counters()
                samples.append(SoakSample(time.monotonic() - t_start, rss, counters))

        rclpy.init()
        client = EpisodeClient("arm")
        ex, thread = spin_in_thread(client)
        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
        try:
            if not client.wait_for(lambda s: s.get("episode") == 0, 180):
                raise TimeoutError("the sim did not start its first episode")
            end = t_start + 60 * args.minutes
            while time.monotonic() < end and not stack.failed():
                r = client.run_episode(min(args.episode_timeout, max(5.0, end - time.monotonic())),
                                       reset=bool(episodes))
                if r["event"] != "client_timeout":  # an episode cut by the end of the soak does not count
                    episodes.append({k: r[k] for k in ("episode", "seed", "success", "event", "steps")})
                print(f"[soak {(time.monotonic() - t_start) / 60:5.1f} min] episode {r['episode']}: "
                      f"{'success' if r['success'] else r['event']}", flush=True)
        finally:
            stop.set()
            sampling.join(args.sample_s + 5)
            crashed = dict(stack.failed())
            ex.shutdown()
            thread.join(5)
            client.destroy_node()
            rclpy.try_shutdown()
    config = {"minutes": args.minutes, "k": args.k, "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"]), "camera_hz": args.camera_hz, "control_rate_hz": control_hz,
              "ranking": True, "backend": "torch", "rt_priority": args.rt_priority, **machine_info(),
              "sample_s": args.sample_s}
    report = summarize_soak(samples, episodes, args.warmup_s, control_hz, crashed, config)
    json_path, png_path = plot_soak(report, out)
    machine = report["machine"]
    rss = ", ".join(f"{n} {r['after_warmup_mb']:.0f}->{r['end_mb']:.0f} MB ({r['growth_pct']:+.1f}%)"
                    for n, r in report["rss"].items())
    print(f"[soak] {report['duration_s'] / 60:.1f} min, window after warm-up {report['window_s']:.0f} s\n"
          f"[soak] RSS: {rss}\n"
          f"[soak] deadline misses {report['deadline_misses']:.0f} / {report['control_ticks']:.0f} ticks = "
          f"{100 * report['deadline_miss_ratio']:.3f}% (max {100 * report['criteria']['deadline_miss_ratio_max']:.1f}%)"
          f"\n[soak] control rate achieved {report['control_rate_achieved_hz']:.1f} Hz of {control_hz:.0f}; longest tick "
          f"interval {report['control_gap_ms_max']:.0f} ms\n[soak] machine: {config['cpus_usable']} of "
          f"{config['cpus']} CPUs usable, cgroup CPU quota {config['cgroup_cpu_quota']}, load {machine['load1_mean']:.1f}, "
          f"CPU steal {machine['steal_pct']:.1f}%, cgroup throttled {machine['throttled_s']:.1f} s"
          f"\n[soak] observations dropped {report['observations_dropped']:.0f} of "
          f"{report['observations_published'] + report['observations_dropped']:.0f}; vla newest-only skips "
          f"{report['vla_skipped_busy']:.0f}\n[soak] success {report['successes']}/{report['episodes']}; crashed: "
          f"{report['crashed'] or 'none'}; {'PASSED' if report['passed'] else 'FAILED'}\n"
          f"wrote {json_path} and {png_path}", flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
