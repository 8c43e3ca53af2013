"""`wm-vla`: one command, a subcommand group per job (sim, train, eval, export, engines, up, bag, teleop, latency)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from wm_vla.data.errors import DataError
from wm_vla.robots.errors import RobotError

# Groups whose commands later milestones bring; each says so instead of pretending to work.
PLANNED_GROUPS: dict[str, tuple[str, str]] = {
    "export": ("ONNX export of encoder, sampler and world model", "issue #4 (runtime)"),
    "engines": ("build/verify TensorRT engines", "issue #4 (runtime)"),
    "up": ("run the ROS 2 stack without ros2 launch", "issue #5 (ROS 2 stack)"),
    "bag": ("rosbag replay, evaluation and conversion", "issue #6 (bags)"),
    "teleop": ("teleoperation and LeRobot recording", "issue #7 (teleop)"),
    "latency": ("latency profiling and budget tuning", "issue #8 (latency)"),
}


class CliError(Exception):
    """A user error the CLI reports in one line (exit code 2)."""


def _sim_collect(args: argparse.Namespace) -> int:
    from wm_vla.sim.collect import CollectConfig, collect

    stats = collect(CollectConfig(world=args.world, episodes=args.episodes, out=args.out, seed=args.seed, noise=args.noise,
                                  family=args.task, image_size=args.image_size, use_videos=args.video,
                                  successes_only=args.successes_only, overwrite=args.overwrite,
                                  progress=not args.no_progress))
    s = stats["success"]
    print(f"wrote {stats['episodes_written']} episodes / {stats['frames_written']} frames to {stats['out']}")
    print(f"expert success {s['successes']}/{s['trials']} ({100 * s['rate']:.1f}%, 95% CI "
          f"{100 * s['ci95_low']:.1f}-{100 * s['ci95_high']:.1f}%), events {stats['events']}")
    print(f"throughput {stats['frames_per_second']} frames/s (sim {stats['sim_seconds']} s + write {stats['write_seconds']} s)")
    return 0


def _sim_check(args: argparse.Namespace) -> int:
    from wm_vla.eval.stats import wilson
    from wm_vla.sim.check import check_expert, write_report

    report = check_expert(args.world, args.episodes, seed=args.seed, noise=args.noise, progress=not args.no_progress)
    for fam, r in report["by_family"].items():
        print(f"{args.world:9s} {fam:6s} {wilson(r['successes'], r['trials'])}")
    print(f"{args.world:9s} {'all':6s} {wilson(report['success']['successes'], report['success']['trials'])}")
    print(f"events {report['events']}  expert modes {report['expert_modes']}")
    if args.out:
        json_path, png_path = write_report(report, Path(args.out))
        print(f"wrote {json_path} and {png_path}")
    return 0


def _sim_rollouts(args: argparse.Namespace) -> int:
    from wm_vla.eval.rollouts import RolloutConfig, record_policy_rollouts

    stats = record_policy_rollouts(RolloutConfig(policy=args.policy, out=args.out, world=args.world, episodes=args.episodes,
                                                 seed=args.seed, k=args.k, pick=args.pick, overwrite=args.overwrite,
                                                 progress=not args.no_progress))
    s = stats["success"]
    print(f"wrote {stats['episodes']} policy episodes to {args.out}: success {s['successes']}/{s['trials']}, "
          f"events {stats['events']}")
    return 0


def _sim_label_candidates(args: argparse.Namespace) -> int:
    from wm_vla.training.candidate_labels import CandidateLabelConfig, label_candidates

    meta = label_candidates(CandidateLabelConfig(policy=args.policy, out=args.out, world=args.world,
                                                 episodes=args.episodes, seed=args.seed, k=args.k, jobs=args.jobs,
                                                 tasks=tuple(args.task.split(",")) if args.task else None,
                                                 progress=not args.no_progress))
    s = meta["episode_success"]
    print(f"wrote {meta['decisions']} labelled decisions (K={meta['k']}) to {args.out}; episodes executing a random "
          f"candidate succeeded {s['successes']}/{s['trials']}")
    return 0


def _sim_render(args: argparse.Namespace) -> int:
    from wm_vla.sim.strip import render_strip

    print(f"wrote {render_strip(Path(args.dataset), Path(args.out), args.episodes, args.frames)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """What exists today: expert demonstrations in both worlds, written as LeRobot datasets and shown as PNG strips."""
    from wm_vla.sim.collect import CollectConfig, collect
    from wm_vla.sim.strip import render_strip

    out = Path(args.out)
    summary = {}
    for world, episodes in (("arm", 4), ("quadruped", 3)):
        stats = collect(CollectConfig(world=world, episodes=episodes, out=out / world, seed=args.seed, overwrite=True))
        png = render_strip(out / world, out / f"{world}_episodes.png", episodes=episodes)
        summary[world] = {"dataset": str(out / world), "strip": str(png), "episodes": stats["episodes_written"],
                          "frames": stats["frames_written"], "success": stats["success"]["successes"],
                          "frames_per_second": stats["frames_per_second"]}
        print(f"{world}: {stats['success']['successes']}/{episodes} expert successes, {stats['frames_written']} frames "
              f"-> {out / world} ; strip {png}")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"open {out}/arm_episodes.png and {out}/quadruped_episodes.png to see the episodes")
    return 0


def _train_policy(args: argparse.Namespace) -> int:
    from wm_vla.training.train_policy import PolicyTrainConfig, train_policy

    result = train_policy(PolicyTrainConfig(dataset=args.dataset, out=args.out, preset=args.preset, steps=args.steps,
                                            batch_size=args.batch_size, lr=args.lr, flare_weight=args.flare_weight,
                                            horizon=args.horizon, exec_horizon=args.exec_horizon, seed=args.seed,
                                            save_every=args.save_every, resume=args.resume, progress=not args.no_progress))
    print(f"policy checkpoint {result['out']} after {result['steps']} steps in {result['train_seconds']} s: {result['final']}")
    return 0


def _train_world_model(args: argparse.Namespace) -> int:
    from wm_vla.training.train_world_model import WorldModelTrainConfig, train_world_model

    result = train_world_model(WorldModelTrainConfig(datasets=args.dataset, policy=args.policy, out=args.out,
                                                     candidates=args.candidates,
                                                     steps=args.steps, seed=args.seed, progress=not args.no_progress))
    print(f"world model (teacher) {result['out']}: {result['transitions']} transitions, {result['train_seconds']} s, "
          f"validation {json.dumps(result['validation'])}")
    return 0


def _train_distill(args: argparse.Namespace) -> int:
    from wm_vla.training.train_world_model import DistillConfig, distill

    result = distill(DistillConfig(datasets=args.dataset, policy=args.policy, teacher=args.teacher, out=args.out,
                                   candidates=args.candidates,
                                   states=args.states, k=args.k, steps=args.steps, seed=args.seed,
                                   progress=not args.no_progress))
    print(f"student {result['out']}: {result['candidates']} policy candidates, {result['train_seconds']} s, "
          f"top-1 ranking agreement with the teacher: held-out states {result['top1_agreement_heldout']:.3f} "
          f"({result['heldout_states']}), training states {result['top1_agreement_train']:.3f}")
    return 0


def _train_tiny(args: argparse.Namespace) -> int:
    from wm_vla.training.pipeline import PipelineConfig, run_pipeline

    log = run_pipeline(PipelineConfig(out=Path(args.out), world=args.world, task=args.task, policy_steps=args.policy_steps,
                                      ablation=args.ablation, jobs=args.jobs, progress=not args.no_progress))
    print(f"stages (s): {log['stages']}")
    print(f"training (policy + world model + distill): {log['training_seconds']} s; everything: {log['total_seconds']} s")
    return 0


def _eval_sim(args: argparse.Namespace) -> int:
    from wm_vla.eval.closed_loop import EvalConfig, evaluate
    from wm_vla.training.pipeline import default_checkpoints

    if args.policy is None:
        policy, wm = default_checkpoints()
        if not (policy / "config.json").is_file():
            raise CliError(f"no --policy given and no default checkpoint at {policy}: run `make train-tiny` "
                           "(or `wm-vla train tiny`) first, or pass --policy/--wm")
        args.policy, args.wm = str(policy), args.wm or (str(wm) if (wm / "config.json").is_file() else None)
    report = evaluate(EvalConfig(policy=args.policy, wm=args.wm, world=args.world, episodes=args.episodes, seed=args.seed,
                                 ks=tuple(args.k), oracle_k=args.oracle_k, ablation_policy=args.ablation_policy,
                                 out=args.out, progress=not args.no_progress, jobs=args.jobs,
                                 exec_horizon=args.exec_horizon, denoise_steps=args.denoise_steps,
                                 tasks=tuple(args.task.split(",")) if args.task else None,
                                 switch_margin=args.switch_margin, teacher=args.teacher))
    print(f"{'config':22s} {'success':>24s} {'decision p50':>13s}")
    for r in report["configs"]:
        label = f"{r['name']} K={r['k']}" + (" (ablation)" if r["policy"] == "ablation" else "")
        rate = f"{r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f}% [{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}]"
        agree = f"   teacher agreement {r['teacher_agreement']:.3f}" if "teacher_agreement" in r else ""
        print(f"{label:22s} {rate:>24s} {r['decision_ms_p50']:10.1f} ms{agree}")
    if args.out:
        print(f"wrote {Path(args.out).with_suffix('.json')} and {Path(args.out).with_suffix('.png')}")
    return 0


def _eval_gym(args: argparse.Namespace) -> int:
    from wm_vla.eval.gym_eval import evaluate_gym

    report = evaluate_gym(args.env, args.task, args.policy, args.wm, episodes=args.episodes, ks=tuple(args.k),
                          seed=args.seed, out=args.out, progress=not args.no_progress)
    for r in report["configs"]:
        print(f"{r['name']} K={r['k']}: {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f}% "
              f"[{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}], decision p50 {r['decision_ms_p50']:.1f} ms")
    return 0


def _planned(group: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        what, where = PLANNED_GROUPS[group]
        raise CliError(f"'wm-vla {group}' ({what}) is not available in this version; it arrives with {where}")

    return run


def build_parser() -> argparse.ArgumentParser:
    from wm_vla.sim.registry import WORLD_NAMES

    parser = argparse.ArgumentParser(prog="wm-vla", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    sim = groups.add_parser("sim", help="MuJoCo worlds: collect demonstrations, check experts, render datasets")
    sim_cmds = sim.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sim_cmds.add_parser("collect", help="scripted-expert episodes -> LeRobotDataset v3")
    c.add_argument("--world", required=True, help=f"one of: {', '.join(WORLD_NAMES)}")
    c.add_argument("--episodes", type=int, required=True)
    c.add_argument("--out", type=Path, required=True, help="dataset directory (created; must be empty)")
    c.add_argument("--seed", type=int, default=0, help="first seed; episode i uses seed+i")
    c.add_argument("--noise", type=float, default=0.0, help="perturb the expert, 0..1 (produces labelled failures)")
    c.add_argument("--task", default=None, help="restrict to one task family (arm: touch|push|place; quadruped: goto)")
    c.add_argument("--image-size", type=int, default=96)
    c.add_argument("--video", action="store_true", help="store cameras as video (needs ffmpeg) instead of PNG images")
    c.add_argument("--successes-only", action="store_true", help="write only successful episodes")
    c.add_argument("--overwrite", action="store_true", help="replace an existing LeRobot dataset at --out")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_sim_collect)
    k = sim_cmds.add_parser("check", help="expert success rate per task family (Wilson 95% CI), JSON + PNG")
    k.add_argument("--world", required=True, help=f"one of: {', '.join(WORLD_NAMES)}")
    k.add_argument("--episodes", type=int, default=40)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--noise", type=float, default=0.0)
    k.add_argument("--out", default=None, help="write OUT.json and OUT.png")
    k.add_argument("--no-progress", action="store_true")
    k.set_defaults(func=_sim_check)
    ro = sim_cmds.add_parser("rollouts", help="the policy's own closed-loop episodes (outcome-labelled) -> LeRobot v3")
    ro.add_argument("--policy", required=True)
    ro.add_argument("--out", required=True)
    ro.add_argument("--world", default="arm")
    ro.add_argument("--episodes", type=int, default=100)
    ro.add_argument("--seed", type=int, default=20_000)
    ro.add_argument("--k", type=int, default=4, help="candidates sampled per decision")
    ro.add_argument("--pick", default="random", help="which candidate runs: first (the policy) or random")
    ro.add_argument("--overwrite", action="store_true")
    ro.add_argument("--no-progress", action="store_true")
    ro.set_defaults(func=_sim_rollouts)
    lc = sim_cmds.add_parser("label-candidates", help="the policy's K candidates per decision with their true outcomes "
                             "(sim-copy rollouts): world-model ranking data")
    lc.add_argument("--policy", required=True)
    lc.add_argument("--out", required=True)
    lc.add_argument("--world", default="arm")
    lc.add_argument("--episodes", type=int, default=200)
    lc.add_argument("--seed", type=int, default=30_000)
    lc.add_argument("--k", type=int, default=8, help="candidates sampled and labelled per decision")
    lc.add_argument("--task", default=None, help="task families, comma-separated; default: the policy's")
    lc.add_argument("--jobs", type=int, default=1, help="parallel processes (disjoint seeds)")
    lc.add_argument("--no-progress", action="store_true")
    lc.set_defaults(func=_sim_label_candidates)
    r = sim_cmds.add_parser("render", help="PNG strip of a LeRobot dataset's episodes")
    r.add_argument("--dataset", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--episodes", type=int, default=4)
    r.add_argument("--frames", type=int, default=8)
    r.set_defaults(func=_sim_render)

    train = groups.add_parser("train", help="train the policy, the world model (teacher), or distil the student")
    train_cmds = train.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tp = train_cmds.add_parser("policy", help="FLARE VLA policy on a LeRobotDataset v3 (image + state + action)")
    tp.add_argument("--dataset", required=True, help="LeRobot dataset directory")
    tp.add_argument("--out", required=True, help="checkpoint directory (safetensors + JSON)")
    tp.add_argument("--preset", default="tiny", help="tiny (CPU) or base (GPU)")
    tp.add_argument("--steps", type=int, default=3000)
    tp.add_argument("--batch-size", type=int, default=32)
    tp.add_argument("--lr", type=float, default=3e-4)
    tp.add_argument("--flare-weight", type=float, default=0.2, help="lambda of the FLARE alignment loss (0 = off)")
    tp.add_argument("--horizon", type=int, default=16)
    tp.add_argument("--exec-horizon", type=int, default=8)
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--save-every", type=int, default=500)
    tp.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tp.add_argument("--no-progress", action="store_true")
    tp.set_defaults(func=_train_policy)
    tw = train_cmds.add_parser("world-model", help="teacher world model on demos + perturbed rollouts")
    tw.add_argument("--dataset", required=True, action="append", help="repeatable: demos and perturbed rollouts")
    tw.add_argument("--policy", required=True, help="policy checkpoint whose encoder defines the latent space")
    tw.add_argument("--candidates", action="append", default=[],
                    help="repeatable: `wm-vla sim label-candidates` folders (the policy's candidates, true outcomes)")
    tw.add_argument("--out", required=True)
    tw.add_argument("--steps", type=int, default=4000)
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--no-progress", action="store_true")
    tw.set_defaults(func=_train_world_model)
    td = train_cmds.add_parser("distill", help="student world model from the teacher on policy candidates")
    td.add_argument("--dataset", required=True, action="append")
    td.add_argument("--policy", required=True)
    td.add_argument("--teacher", required=True)
    td.add_argument("--candidates", action="append", default=[], help="label folders: distil on their candidates")
    td.add_argument("--out", required=True)
    td.add_argument("--states", type=int, default=1500)
    td.add_argument("--k", type=int, default=8)
    td.add_argument("--steps", type=int, default=4000)
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--no-progress", action="store_true")
    td.set_defaults(func=_train_distill)

    tt = train_cmds.add_parser("tiny", help="whole CPU pipeline: collect, policy, world model, distil (timed)")
    tt.add_argument("--out", default="outputs/tiny")
    tt.add_argument("--world", default="arm")
    tt.add_argument("--task", default=None, help="task family; default: the world's benchmark task (arm: touch)")
    tt.add_argument("--jobs", type=int, default=2, help="parallel processes for candidate labelling")
    tt.add_argument("--policy-steps", type=int, default=3000)
    tt.add_argument("--ablation", action="store_true", help="also train the FLARE lambda=0 policy")
    tt.add_argument("--no-progress", action="store_true")
    tt.set_defaults(func=_train_tiny)

    ev = groups.add_parser("eval", help="closed-loop evaluation of policy + ranker")
    ev_cmds = ev.add_subparsers(dest="command", required=True, metavar="COMMAND")
    es = ev_cmds.add_parser("sim", help="single-sample vs GPC-RANK(K) vs oracle ranking on held-out seeds")
    es.add_argument("--world", default="arm")
    es.add_argument("--policy", default=None, help="default: outputs/tiny/policy from `wm-vla train tiny`")
    es.add_argument("--wm", default=None, help="(student) world model; default outputs/tiny/wm_student with the default policy")
    es.add_argument("--episodes", type=int, default=100)
    es.add_argument("--seed", type=int, default=1_000_000, help="first held-out seed")
    es.add_argument("--k", type=int, nargs="+", default=[4, 16, 64])
    es.add_argument("--oracle-k", type=int, default=16, help="0 disables the oracle")
    es.add_argument("--ablation-policy", default=None, help="e.g. the FLARE lambda=0 policy")
    es.add_argument("--out", default=None, help="write OUT.json and OUT.png")
    es.add_argument("--jobs", type=int, default=1, help="evaluate configurations in N parallel processes")
    es.add_argument("--exec-horizon", type=int, default=None, help="override: actions executed per decision")
    es.add_argument("--denoise-steps", type=int, default=None, help="override: Euler steps per sample")
    es.add_argument("--teacher", default=None, help="also rank each decision with this (teacher) world model and "
                    "report top-1 agreement with --wm on the real decisions")
    es.add_argument("--switch-margin", type=float, default=0.0,
                    help="ranker keeps the policy's first sample unless another scores this much higher")
    es.add_argument("--task", default=None, help="task families, comma-separated (arm: touch,push,place); "
                    "default: the families in the policy's training instructions")
    es.add_argument("--no-progress", action="store_true")
    es.set_defaults(func=_eval_sim)

    eg = ev_cmds.add_parser("gym", help="same evaluation on a Gymnasium env with LeRobot keys (pixels, agent_pos)")
    eg.add_argument("--env", required=True, help="Gymnasium id, e.g. wm_vla/Arm-v0 or a LeRobot gym env")
    eg.add_argument("--task", required=True, help="instruction given to the policy")
    eg.add_argument("--policy", required=True)
    eg.add_argument("--wm", default=None)
    eg.add_argument("--episodes", type=int, default=20)
    eg.add_argument("--k", type=int, nargs="+", default=[16])
    eg.add_argument("--seed", type=int, default=1_000_000)
    eg.add_argument("--out", default=None)
    eg.add_argument("--no-progress", action="store_true")
    eg.set_defaults(func=_eval_gym)

    d = groups.add_parser("demo", help="collect and render a few expert episodes in both worlds")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    for group, (what, where) in PLANNED_GROUPS.items():
        p = groups.add_parser(group, help=f"{what} (arrives with {where})")
        p.set_defaults(func=_planned(group))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from wm_vla.models.errors import ModelError
    from wm_vla.sim.errors import SimError
    from wm_vla.training.errors import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, SimError, DataError, RobotError, ModelError, TrainingError, ValueError, FileNotFoundError) as exc:
        print(f"wm-vla: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
