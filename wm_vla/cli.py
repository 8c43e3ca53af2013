"""`wm-vla`: one command, a subcommand group per job (sim, train, eval, export, engines, latency, up, bag, teleop)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wm_vla.data.errors import DataError
from wm_vla.robots.errors import RobotError

# Groups whose commands later milestones bring; each says so instead of pretending to work.


class CliError(Exception):
    """A user error the CLI reports in one line (exit code 2)."""


def _sim_collect(args: argparse.Namespace) -> int:
    from wm_vla.sim.collect import CollectConfig, collect

    stats = collect(CollectConfig(world=args.world, episodes=args.episodes, out=args.out, seed=args.seed, noise=args.noise,
                                  family=args.task, image_size=args.image_size, use_videos=args.video,
                                  successes_only=args.successes_only, overwrite=args.overwrite,
                                  progress=not args.no_progress, hindsight=not args.no_hindsight))
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
                                                 follow=args.follow, denoise_steps=args.denoise_steps,
                                                 hindsight=not args.no_hindsight,
                                                 tasks=tuple(args.task.split(",")) if args.task else None,
                                                 progress=not args.no_progress, execute_wm=args.execute_wm,
                                                 wm_encoder=args.wm_encoder,
                                                 **({} if args.switch_margin is None
                                                    else {"switch_margin": args.switch_margin})))
    s = meta["episode_success"]
    print(f"wrote {meta['decisions']} labelled decisions (K={meta['k']}) to {args.out}; episodes executing "
          f"the {meta['executed']} succeeded {s['successes']}/{s['trials']}")
    return 0


def _sim_render(args: argparse.Namespace) -> int:
    from wm_vla.sim.strip import render_strip

    print(f"wrote {render_strip(Path(args.dataset), Path(args.out), args.episodes, args.frames)}")
    return 0


def _up(args: argparse.Namespace) -> int:
    """The bringup plan of `launch/robot.launch.py`, run as one subprocess per node (no system ROS needed)."""
    from wm_vla.bringup import BringupArgs, build_plan
    from wm_vla.launcher import Stack

    plan = build_plan(BringupArgs(robot=args.robot, backend=args.backend, k=args.k, denoise_steps=args.denoise_steps,
                                  params_file=args.params_file,
                                  use_sim_time=args.use_sim_time, rank=not args.no_rank, seed=args.seed,
                                  policy=args.policy, world_model=args.wm, wm_encoder=args.wm_encoder,
                                  rate_scale=args.rate_scale, record_bag=args.record_bag or "", teleop=args.teleop or "",
                                  record=args.record or "", intervene=args.intervene, record_fps=args.record_fps,
                                  teleop_max_linear=args.teleop_max_linear,
                                  command_interface=args.command_interface or "",
                                  inference_cpus=args.inference_cpus))
    if args.dry_run:
        print(json.dumps([n.to_dict() for n in plan], indent=1))
        return 0
    with Stack(plan, log_dir=Path(args.log_dir) if args.log_dir else None, quiet=bool(args.log_dir)) as stack:
        print(f"wm-vla up: {', '.join(n.name for n in stack.plan)} running"
              + (f" (not started without ros2 launch: {', '.join(stack.skipped)})" if stack.skipped else "")
              + "; Ctrl-C stops", flush=True)
        code = stack.wait()
    if code:
        print(f"wm-vla up: a node exited with code {code}: {stack.failed()}", file=sys.stderr)
    return code


def _demo(args: argparse.Namespace) -> int:
    """The stack over ROS 2 on the sim: N episodes ranked and N single-sample; JSON + PNG report."""
    from wm_vla.eval.ros_demo import DemoConfig, run_demo

    _default_checkpoints(args)
    report = run_demo(DemoConfig(episodes=args.episodes, k=args.k, seed=args.seed, backend=args.backend,
                                 denoise_steps=args.denoise_steps,
                                 policy=args.policy, world_model=args.wm, wm_encoder=args.wm_encoder, out=args.out,
                                 rate_scale=args.rate_scale,
                                 params_file=args.params_file))
    print(f"success ranked (K={report['k']}): {100 * report['success_rate_ranked']:.0f}%  single: "
          f"{100 * report['success_rate_single']:.0f}%  over {report['episodes']} episodes each")
    print(f"camera stamp -> command: p50 {report['latency_ms_p50']:.1f} ms, p99 {report['latency_ms_p99']:.1f} ms "
          f"({report['clock']} clock)")
    print(f"wrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'report.png'} in {report['wall_s']} s")
    return 0


def _sim_demo(args: argparse.Namespace) -> int:
    """Expert demonstrations in both worlds, written as LeRobot datasets and shown as PNG strips."""
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
                                            film=args.film, horizon=args.horizon, exec_horizon=args.exec_horizon, seed=args.seed,
                                            save_every=args.save_every, resume=args.resume, progress=not args.no_progress))
    print(f"policy checkpoint {result['out']} after {result['steps']} steps in {result['train_seconds']} s: {result['final']}")
    return 0


def _train_world_model(args: argparse.Namespace) -> int:
    from wm_vla.training.train_world_model import WorldModelTrainConfig, ranking_outlook, train_world_model

    result = train_world_model(WorldModelTrainConfig(datasets=args.dataset, policy=args.policy, out=args.out,
                                                     candidates=args.candidates, hindsight=args.hindsight,
                                                     hindsight_datasets=args.hindsight_datasets,
                                                     instruction_rank_weight=args.instruction_rank_weight,
                                                     steps=args.steps, seed=args.seed, split_seed=args.split_seed,
                                                     progress=not args.no_progress))
    print(f"world model (teacher) {result['out']}: {result['transitions']} transitions, {result['train_seconds']} s, "
          f"validation {json.dumps(result['validation'])}")
    outlook = ranking_outlook(result["validation"])
    if outlook:
        print(outlook)
    return 0


def ranked_decisions_line(result: dict[str, Any]) -> str | None:
    """What `train distill` says about the held-out recorded decisions (`--ranked-states`), if it held any out."""
    if "ranked_decision_agreement_heldout" not in result:
        return None
    line = (f"held-out recorded decisions ({result['ranked_heldout_decisions']}, K={result['ranked_k']}): the student "
            f"takes the teacher's decision under the switch rule in {result['ranked_decision_agreement_heldout']:.3f}; "
            f"{result['ranked_heldout_near_tie_share']:.0%} of them are near-ties (the teacher's own scores within a "
            "fifth of the margin of another decision)")
    if "ranked_heldout_decision_agreement_clear" in result:
        line += f", {result['ranked_heldout_decision_agreement_clear']:.3f} on the others"
    return line


def _train_distill(args: argparse.Namespace) -> int:
    from wm_vla.training.train_world_model import DistillConfig, distill

    result = distill(DistillConfig(datasets=args.dataset, policy=args.policy, teacher=_one_or_ensemble(args.teacher) or "",
                                   out=args.out,
                                   candidates=args.candidates, hindsight=args.hindsight,
                                   hindsight_datasets=args.hindsight_datasets,
                                   instruction_rank_weight=args.instruction_rank_weight, states=args.states, k=args.k,
                                   steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                   extra_states=args.extra_states, ranked_states=args.ranked_states,
                                   student_hidden=args.student_hidden, student_layers=args.student_layers,
                                   ground_truth_weight=args.ground_truth_weight, relative_weight=args.relative_weight,
                                   decision_weight=args.decision_weight, lr=args.lr,
                                   rank_weight=args.rank_weight, rank_temperature=args.rank_temperature,
                                   **({} if args.switch_margin is None else {"switch_margin": args.switch_margin}),
                                   progress=not args.no_progress))
    print(f"student {result['out']}: {result['candidates']} policy candidates, {result['train_seconds']} s, "
          f"top-1 ranking agreement with the teacher: held-out states {result['top1_agreement_heldout']:.3f} "
          f"({result['heldout_states']}), training states {result['top1_agreement_train']:.3f}; the same decision "
          f"under the ranker's switch rule: held-out {result['decision_agreement_heldout']:.3f}, "
          f"training {result['decision_agreement_train']:.3f}")
    if "top1_instruction_agreement_heldout" in result:
        print(f"held-out recorded frames: the student scores the same instruction highest as the teacher in "
              f"{result['top1_instruction_agreement_heldout']:.1%}")
    if (line := ranked_decisions_line(result)) is not None:
        print(line)
    return 0


def _train_ranked_states(args: argparse.Namespace) -> int:
    from wm_vla.training.ranked_states import RankedStatesConfig, record_ranked_states

    from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

    _default_checkpoints(args)
    if args.wm is None:
        raise CliError("no --wm given and no shipped student world model: pass --wm")
    args.wm_encoder = resolve_wm_encoder(args.wm_encoder, is_shipped(args.wm, args.world), args.world)
    r = record_ranked_states(RankedStatesConfig(policy=args.policy, wm=args.wm, out=args.out, wm_encoder=args.wm_encoder,
                                                episodes=args.episodes, seed=args.seed, k=args.k,
                                                switch_margin=args.switch_margin, world=args.world,
                                                progress=not args.no_progress))
    print(f"ranked states {r['out']}: {r['decisions']} decisions x K={r['k']} from {r['episodes']} episodes "
          f"({r['successes']} successes); distil on them with `wm-vla train distill ... --ranked-states {r['out']}`")
    return 0


def _train_tiny(args: argparse.Namespace) -> int:
    from wm_vla.training.pipeline import PipelineConfig, run_pipeline

    log = run_pipeline(PipelineConfig(out=Path(args.out), world=args.world, task=args.task, policy_steps=args.policy_steps,
                                      demos=args.demos, perturbed=args.perturbed, label_episodes=args.label_episodes,
                                      label_follow=args.label_follow, seed=args.seed, wm_steps=args.wm_steps,
                                      distill_steps=args.distill_steps,
                                      ablation=args.ablation, film=args.film, jobs=args.jobs,
                                      policy_demos=args.policy_demos, hindsight=args.hindsight,
                                      wm_encoder_demos=args.wm_encoder_demos, wm_encoder_steps=args.wm_encoder_steps,
                                      progress=not args.no_progress))
    print(f"stages (s): {log['stages']}")
    print(f"training (policy + world model + distill): {log['training_seconds']} s; everything: {log['total_seconds']} s")
    if log.get("ranking_outlook"):
        print(f"teacher: {log['ranking_outlook']}")
    return 0


def _models_ship(args: argparse.Namespace) -> int:
    from wm_vla.models.release import SHIPPED_DIR, ship
    from wm_vla.training.pipeline import POLICY, STUDENT, TEACHER, WM_ENCODER

    src = Path(args.source)
    sources = {"policy": Path(args.policy or src / POLICY), "wm_student": Path(args.wm or src / STUDENT),
               "wm_teacher": Path(args.teacher or src / TEACHER),
               "wm_encoder": Path(args.wm_encoder or src / WM_ENCODER)}
    if args.roles == "auto":  # the world models' encoder too when they were trained in one
        has_encoder = args.wm_encoder or (src / WM_ENCODER / "config.json").is_file()
        args.roles = "policy,wm_student,wm_teacher" + (",wm_encoder" if has_encoder else "")
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = sorted(set(roles) - set(sources))
    if unknown:
        raise CliError(f"unknown checkpoint roles {unknown}; expected some of {sorted(sources)}")
    sources = {role: sources[role] for role in roles}
    out = ship(sources, Path(args.out or SHIPPED_DIR), recipe=args.recipe)
    print(f"shipped {', '.join(f'{k} <- {v}' for k, v in sources.items())} to {out}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from wm_vla.models.release import SHIPPED_DIR, verify_release

    files = verify_release(Path(args.root or SHIPPED_DIR))
    print(f"{len(files)} shipped files match their manifest and load: {', '.join(sorted(files))}")
    return 0


def _default_checkpoints(args: argparse.Namespace) -> None:
    """Without --policy, use the shipped `tiny` checkpoints (and the shipped student unless --wm is given)."""
    from wm_vla.training.pipeline import default_checkpoints

    if args.policy is None:
        policy, wm = default_checkpoints()
        if not (policy / "config.json").is_file():
            raise CliError(f"no --policy given and no shipped checkpoint at {policy}: run `make models` "
                           "(or `wm-vla train tiny` then `wm-vla models ship`), or pass --policy/--wm")
        args.policy, args.wm = str(policy), args.wm or (str(wm) if (wm / "config.json").is_file() else None)


def _one_or_ensemble(paths: str | list[str] | None) -> str | list[str] | None:
    """A `nargs="+"` world-model argument: one path as a string (as before), several as the ensemble's list."""
    return paths[0] if isinstance(paths, list) and len(paths) == 1 else paths


def _eval_sim(args: argparse.Namespace) -> int:
    from wm_vla.eval.closed_loop import EvalConfig, evaluate

    from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

    _default_checkpoints(args)
    args.wm, args.teacher = _one_or_ensemble(args.wm), _one_or_ensemble(args.teacher)
    # the shipped world models rank in the shipped encoder's latent (none: the acting policy's)
    args.wm_encoder = resolve_wm_encoder(args.wm_encoder, is_shipped(args.wm, args.world), args.world) if args.wm else None
    report = evaluate(EvalConfig(policy=args.policy, wm=args.wm, world=args.world, episodes=args.episodes, seed=args.seed,
                                 ks=tuple(args.k), oracle_k=args.oracle_k, ablation_policy=args.ablation_policy,
                                 out=args.out, progress=not args.no_progress, jobs=args.jobs,
                                 exec_horizon=args.exec_horizon, denoise_steps=args.denoise_steps,
                                 tasks=tuple(args.task.split(",")) if args.task else None,
                                 switch_margin=EvalConfig.switch_margin if args.switch_margin is None
                                 else args.switch_margin, teacher=args.teacher,
                                 disagreement_weight=args.disagreement_weight,
                                 oracle_follow=args.oracle_follow, wm_encoder=args.wm_encoder))
    print(f"{'config':22s} {'success':>24s} {'decision p50':>13s}")
    for r in report["configs"]:
        label = f"{r['name']} K={r['k']}" + (" (ablation)" if r["policy"] == "ablation" else "")
        rate = f"{r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f}% [{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}]"
        agree = f"   teacher agreement {r['teacher_agreement']:.3f}" if "teacher_agreement" in r else ""
        print(f"{label:22s} {rate:>24s} {r['decision_ms_p50']:10.1f} ms{agree}")
        if "teacher_disagreements" in r:
            d = r["teacher_disagreements"]
            print(f"{'':22s} disagreements: {d['switched']} switched where the teacher kept the first sample, "
                  f"{d['kept']} kept where it switched, {d['other']} another candidate; the teacher's score lost by "
                  f"the pick: median {d['regret_p50']:.3f}, under 0.01 in {d['regret_below_0.01']}, under 0.05 in "
                  f"{d['regret_below_0.05']}")
    for p in report["paired_vs_single"]:
        print(f"{p['config']} K={p['k']} vs single, same seeds: {p['only_a']} episodes won only by {p['config']}, "
              f"{p['only_b']} only by single (exact McNemar p = {p['mcnemar_p']:.3g})")
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


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise CliError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise CliError(f"expected positive integers, got {text!r}")
    return values


def _export(args: argparse.Namespace) -> int:
    from wm_vla.runtime.export import export_checkpoints
    from wm_vla.runtime.trt_ops import check_export

    info = export_checkpoints(Path(args.policy), Path(args.out), Path(args.wm) if args.wm else None, args.steps,
                              args.opset)
    for name in info.graph_names:
        path = info.graph_path(name)
        print(f"{name:12s} {path}  {path.stat().st_size / 1e6:.2f} MB  sha256 {info.graph_sha256(name)[:12]}")
    print(f"metadata     {info.directory / 'export.json'}  (preset {info.spec.preset}, H={info.spec.horizon}, "
          f"A={info.spec.action_dim}, steps={info.spec.steps})")
    violations = check_export(info.directory)
    n_bad = sum(len(v) for v in violations.values())
    print("TensorRT operator check: " + ("ok" if not n_bad else f"{n_bad} violation(s), see `wm-vla engines check`"))
    if not args.no_verify:
        from wm_vla.runtime.verify import parity_vs_torch

        figures = parity_vs_torch(info.directory, args.policy, args.wm, ks=(1, 16))
        for k, outputs in figures.items():
            print(f"parity onnxruntime vs torch, K={k}: " + ", ".join(
                f"{n} max|d| {a.max_abs:.2e} cos {a.cosine:.9f}" for n, a in outputs.items()))
    return 0


def _engines_check(args: argparse.Namespace) -> int:
    from wm_vla.runtime.trt_ops import require_supported, support_list

    counts = require_supported(Path(args.onnx))
    src = support_list()["source"]
    for name, n in counts.items():
        print(f"{name:12s} {n} nodes: every operator is supported by TensorRT's ONNX parser")
    print(f"(support list: onnx-tensorrt {src['ref']} {src['path']}, commit {src['commit'][:10]})")
    return 0


def _trt_backend(args: argparse.Namespace, build: bool) -> object:
    from wm_vla.runtime.backends.trt_backend import TrtBackend

    calibration = None
    if args.precision == "int8":
        if not args.calib_dataset:
            raise CliError("--precision int8 needs --calib-dataset (a LeRobot dataset of the robot's frames)")
        from wm_vla.runtime.calibration import calibration_feeds
        from wm_vla.runtime.export import load_export
        from wm_vla.training.datasets import load_frames

        spec = load_export(Path(args.onnx)).spec
        frames = load_frames(args.calib_dataset, spec.image_size, spec.cameras, progress=False)
        calibration = calibration_feeds(Path(args.onnx), frames.images.numpy(), frames.state.numpy(), frames.tasks,
                                        args.calib_frames, args.k_profile[1])
    return TrtBackend(args.onnx, args.engines, args.precision, args.device, args.k_profile, build=build,
                      rebuild=getattr(args, "rebuild", False), calibration=calibration)


def _engines_build(args: argparse.Namespace) -> int:
    from wm_vla.runtime.trt_ops import require_supported

    require_supported(Path(args.onnx))
    backend = _trt_backend(args, build=True)
    for graph, how in backend.build_log.items():  # type: ignore[attr-defined]
        print(f"{graph:12s} {how}")
    print(f"engines for {backend.describe()} in {args.engines} (manifest {Path(args.engines) / 'manifest.json'})")  # type: ignore[attr-defined]
    return 0


def _engines_verify(args: argparse.Namespace) -> int:
    from wm_vla.runtime.backends.ort_backend import OrtBackend
    from wm_vla.runtime.parity import require
    from wm_vla.runtime.verify import compare_backends

    trt = _trt_backend(args, build=not args.no_build)
    figures = compare_backends(OrtBackend(args.onnx, "cpu"), trt, args.k)  # type: ignore[arg-type]
    worst = 1.0
    for k, outputs in figures.items():
        print(f"K={k}: " + ", ".join(f"{n} cos {a.cosine:.5f} max|d| {a.max_abs:.2e}" for n, a in outputs.items()))
        worst = min([worst, *(a.cosine for a in outputs.values())])
        require(outputs, min_cosine=args.min_cosine, what=f"TensorRT ({args.precision}) at K={k}")
    print(f"ok: TensorRT agrees with onnxruntime (lowest cosine {worst:.5f} >= {args.min_cosine})")
    return 0


def _latency_bench(args: argparse.Namespace) -> int:
    from wm_vla.eval.latency_bench import BenchConfig, format_table, run_bench, write_report

    _default_checkpoints(args)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in ("torch", "onnxruntime", "tensorrt")]
    if unknown or not backends:
        raise CliError(f"unknown backend(s) {unknown}; choose from torch, onnxruntime, tensorrt")
    report = run_bench(BenchConfig(policy=args.policy, wm=args.wm, wm_encoder=_latency_wm_encoder(args), onnx=args.onnx,
                                   backends=backends, ks=_ints(args.k),
                                   iters=args.iters, warmup=args.warmup, robot=args.robot, threads=args.threads,
                                   device=args.device, precision=args.precision, engine_dir=args.engines,
                                   seed=args.seed, out=args.out, progress=not args.no_progress))
    print(format_table(report))
    if args.out:
        json_path, png_path = write_report(report, Path(args.out))
        print(f"wrote {json_path} and {png_path}")
    return 0


# ----- wm-vla bag (issue #6): eval | score | play | sim -----
def _bag_eval(args: argparse.Namespace, score_only: bool = False) -> int:
    from wm_vla.data.bags import parse_overrides
    from wm_vla.eval.bag_eval import BagEvalConfig, evaluate_bag

    from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

    _default_checkpoints(args)
    encoder = resolve_wm_encoder(args.wm_encoder, is_shipped(args.wm, args.robot), args.robot) if args.wm else None
    report = evaluate_bag(BagEvalConfig(
        bag=args.bag, policy=args.policy, wm=args.wm, wm_encoder=encoder, out=args.out, robot=args.robot, k=args.k, seed=args.seed,
        backend=args.backend, onnx_dir=args.onnx_dir, topics=parse_overrides(args.topic), every_s=args.every,
        max_age_ms=args.max_age_ms, episodes=args.episodes, gap_s=args.gap or None, marker=args.marker,
        max_decisions=args.max_decisions, instruction=args.instruction, fail_threshold=args.fail_threshold,
        threads=args.threads, progress=not args.no_progress), score_only)
    s = report["summary"]
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    for kind, v in report["issues"].items():
        print(f"bag issue: {kind}: {v['count']} (e.g. {v['example']})", file=sys.stderr)
    print(f"{s['decisions']} decisions in {s['episodes']} episode(s), {s['throughput']['decisions_per_s']:.2f} decisions/s")
    if not score_only:
        e = s["error"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"MAE vs recorded: candidate 0 {fmt(e['cand0'])}, chosen {fmt(e['chosen'])}, best of K {fmt(e['best_of_k'])}")
        print(f"WM cos(predicted, realised z_t+H) for the recorded chunk: "
              f"{fmt(s['world_model']['cos_pred_recorded_vs_realised'])}")
        if "replay" in s:
            print(f"replay: same choice {s['replay']['chosen_match']}/{s['replay']['with_recorded_choice']}, "
                  f"max |candidate diff| {s['replay']['max_abs_diff']:.3g}")
    print(f"WM predicts failure at {len(report['failure_moments'])} moment(s) (P >= {args.fail_threshold})")
    if args.out:
        print("wrote " + ", ".join(report["files"]))
    return 0


def _bag_play(args: argparse.Namespace) -> int:
    from wm_vla.data.bags.play import PlayConfig, bag_topics, parse_remaps

    cfg = PlayConfig(Path(args.bag), rate=args.rate, loop=args.loop, start_offset_s=args.start_offset,
                     remap=parse_remaps(args.remap), topics=tuple(args.topics or ()), clock_hz=args.clock).validate()
    bag_topics(cfg.bag)  # a bag that does not open is refused before ROS starts
    from bag_player.node import main as play  # rclpy lives in the node package, never in the core

    print(f"published {play(cfg, wait_s=args.wait_for_subscribers)} messages")
    return 0


def _bag_sim(args: argparse.Namespace) -> int:
    from wm_vla.data.bags.simbag import SimBagConfig, record_sim_bag

    path, summary = record_sim_bag(SimBagConfig(out=Path(args.out), episodes=args.episodes, seed=args.seed,
                                                family=args.task, image_size=args.image_size, storage=args.storage,
                                                gap_s=args.gap, progress=not args.no_progress))
    ok = sum(e["success"] for e in summary["episodes"])
    print(f"wrote {path}: {len(summary['episodes'])} episodes ({ok} successful), {summary['steps']} steps, "
          f"{summary['duration_s']:.1f} s of bag time")
    return 0


def _bag_to_lerobot(args: argparse.Namespace) -> int:
    from wm_vla.data.bags import parse_overrides
    from wm_vla.data.bags.to_lerobot import ConvertConfig, convert_bag

    summary = convert_bag(ConvertConfig(
        bag=Path(args.bag), out=Path(args.out), robot=args.profile,
        cameras=tuple(c for c in (args.cameras or "").split(",") if c), topics=parse_overrides(args.topic),
        fps=args.fps, image_size=args.image_size, max_age_ms=args.max_age_ms, episodes=args.episodes, gap_s=args.gap,
        marker=args.marker, instruction=args.instruction))
    Path(args.out, "convert_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{summary['episodes']} episodes, {summary['frames']} frames -> {args.out} "
          f"({summary['dataset_episodes']} episodes there); {summary['frames_per_second']} frames/s "
          f"(read {summary['read_s']} s, write {summary['write_s']} s); dropped {summary['dropped']}")
    return 0


def _teleop_collect(args: argparse.Namespace) -> int:
    """Teleoperated episodes through the ROS stack (sim + teleop_node + recorder_node), the scripted expert as
    the joystick operator."""
    from teleop_node.operator import collect  # rclpy lives in the node package, never in the core

    summary = collect(Path(args.out), args.episodes, seed=args.seed,
                      family=tuple(f for f in (args.family or "").split(",") if f) or None,
                      log_dir=Path(args.log_dir) if args.log_dir else None, timeout_s=args.timeout, fps=args.fps,
                      max_linear=args.max_linear)
    Path(args.out, "collect_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{summary['episodes']} teleoperated episodes ({summary['successes']} successes) -> {args.out} "
          f"({summary['dataset_episodes']} episodes there) in {summary['wall_s']} s")
    return 0


def _add_teleop_commands(groups: argparse._SubParsersAction) -> None:
    teleop = groups.add_parser("teleop", help="teleoperation and crash-safe LeRobot recording (interactive: "
                                              "`wm-vla up --teleop keyboard --record DIR`)")
    cmds = teleop.add_subparsers(dest="command")
    teleop.set_defaults(func=_need_command(teleop))
    c = cmds.add_parser("collect", help="N teleoperated sim episodes through sim + teleop_node + recorder_node, "
                                        "driven by the scripted expert as a joystick")
    c.add_argument("--out", required=True, help="dataset directory (appended to when it exists)")
    c.add_argument("--episodes", type=int, default=50)
    c.add_argument("--seed", type=int, default=0, help="sim seed of the first episode")
    c.add_argument("--family", default=None, help="task families, comma-separated (default: the policy's)")
    c.add_argument("--fps", type=int, default=0, help="dataset fps (default: the profile's policy rate)")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds per episode")
    c.add_argument("--max-linear", type=float, default=0.25,
                   help="teleop gripper speed at full deflection, m/s (teleop_node max_linear, whose own default is "
                        "a cautious 0.15); 0.25 lets the scripted operator move at the expert's top speed")
    c.add_argument("--log-dir", default=None, help="node logs (default: a temporary directory)")
    c.set_defaults(func=_teleop_collect)


def _add_bag_commands(groups: argparse._SubParsersAction) -> None:
    bag = groups.add_parser("bag", help="rosbags: offline evaluation, WM scoring, real-time replay, sim bags")
    cmds = bag.add_subparsers(dest="command")
    bag.set_defaults(func=_need_command(bag))
    for name, helptext in (("eval", "open-loop replay of every decision point: candidates vs recorded commands, "
                                     "ranking analysis, WM vs realised future, latency; JSON + Markdown + PNG"),
                           ("score", "WM scores of the recorded chunks and the candidates; moments of predicted "
                                     "failure")):
        e = cmds.add_parser(name, help=helptext)
        e.add_argument("bag", help="rosbag2 directory (mcap or sqlite3) or a .mcap file")
        e.add_argument("--policy", default=None, help="policy checkpoint (default: wm-vla train tiny's)")
        e.add_argument("--wm", default=None, help="world model checkpoint (default: the pipeline's student)")
        e.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
        e.add_argument("--out", default=None, help="report directory (report.json, report.md, PNGs)")
        e.add_argument("--robot", default="arm", help="robot profile (topic names, state/action order)")
        e.add_argument("--topic", action="append", default=[], metavar="NAME=/topic",
                       help="override a topic: a camera name, joint_states, instruction, marker, command[.N]")
        e.add_argument("-k", "--k", type=int, default=16, help="candidates per decision")
        e.add_argument("--seed", type=int, default=0)
        e.add_argument("--backend", default="torch", choices=("auto", "torch", "onnxruntime", "tensorrt"))
        e.add_argument("--onnx-dir", default=None)
        e.add_argument("--every", type=float, default=None, help="seconds between decisions (default exec horizon)")
        e.add_argument("--max-age-ms", type=float, default=None, help="as-of age bound (default: the profile's)")
        e.add_argument("--episodes", default=None, help="episode time ranges START:END,... (s from the bag start)")
        e.add_argument("--gap", type=float, default=1.0, help="split episodes at pauses longer than this (s; 0: off)")
        e.add_argument("--marker", default=None, help="split episodes at this marker topic (String/Bool)")
        e.add_argument("--max-decisions", type=int, default=None)
        e.add_argument("--instruction", default=None, help="instruction when the bag has none")
        e.add_argument("--fail-threshold", type=float, default=0.5)
        e.add_argument("--threads", type=int, default=None)
        e.add_argument("--no-progress", action="store_true")
        e.set_defaults(func=_bag_eval if name == "eval" else lambda a: _bag_eval(a, score_only=True))
    p = cmds.add_parser("play", help="publish a bag into ROS 2 in real time (rclpy)")
    p.add_argument("bag")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--loop", action="store_true")
    p.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag")
    p.add_argument("--remap", action="append", default=[], metavar="/from:=/to")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics")
    p.add_argument("--clock", type=float, default=0.0, metavar="HZ", help="publish /clock at this rate")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a subscriber on every topic before playing")
    p.set_defaults(func=_bag_play)
    c = cmds.add_parser("to-lerobot", help="convert a bag recorded elsewhere into a LeRobot v3 dataset (crash-safe, "
                                           "appends to an existing dataset with the same features)")
    c.add_argument("bag", help="rosbag2 directory (mcap or sqlite3) or a .mcap file")
    c.add_argument("--profile", default="arm", help="robot profile (topics, state/action order)")
    c.add_argument("--out", required=True, help="dataset directory")
    c.add_argument("--cameras", default=None, help="camera names, comma-separated (default: the profile's)")
    c.add_argument("--topic", action="append", default=[], metavar="NAME=/topic",
                   help="override a topic: a camera name, joint_states, odometry, instruction, marker, command[.N]")
    c.add_argument("--fps", type=int, default=0, help="dataset fps (default: the profile's policy rate)")
    c.add_argument("--image-size", type=int, default=96)
    c.add_argument("--max-age-ms", type=float, default=None, help="as-of age bound (default: the profile's)")
    c.add_argument("--episodes", default=None, help="episode time ranges START:END,... (s from the bag start)")
    c.add_argument("--gap", type=float, default=1.0, help="split episodes at pauses longer than this (s; 0: off)")
    c.add_argument("--marker", default=None, help="split episodes at this marker topic (String/Bool)")
    c.add_argument("--instruction", default=None, help="task string when the bag has no instruction topic")
    c.set_defaults(func=_bag_to_lerobot)
    m = cmds.add_parser("sim", help="record expert episodes of the MuJoCo arm as a realsense/JTC-style bag")
    m.add_argument("--out", required=True)
    m.add_argument("--episodes", type=int, default=4)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--task", default="touch")
    m.add_argument("--image-size", type=int, default=96)
    m.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    m.add_argument("--gap", type=float, default=2.0, help="pause between episodes (s)")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_bag_sim)


def _latency_wm_encoder(args: argparse.Namespace) -> str | None:
    """`latency bench/profile/tune --wm-encoder`: the shipped encoder with the shipped world model, "none" = off."""
    from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

    return resolve_wm_encoder(args.wm_encoder, is_shipped(args.wm), "arm") if args.wm else None


def _latency_profile(args: argparse.Namespace) -> int:
    from wm_vla.eval.latency_profile import ProfileConfig, print_table, run_profile, write_profile

    _default_checkpoints(args)
    backends = tuple(b.strip() for b in args.backend.split(",") if b.strip())
    precisions = {b: tuple(p.strip() for p in args.precision.split(",")) for b in backends} if args.precision else {}
    report = run_profile(ProfileConfig(policy=args.policy, wm=args.wm, wm_encoder=_latency_wm_encoder(args),
                                       robot=args.robot, backends=backends,
                                       precisions=precisions, ks=_ints(args.k), steps=_ints(args.steps),
                                       decisions=args.decisions, warmup=args.warmup, threads=args.threads,
                                       device=args.device, onnx_cache=args.onnx_cache, seed=args.seed,
                                       progress=not args.no_progress))
    print_table(report)
    if args.out:
        json_path, png_path = write_profile(report, Path(args.out))
        print(f"wrote {json_path} and {png_path}")
    return 0


def _latency_tune(args: argparse.Namespace) -> int:
    from wm_vla.eval.latency_tune import TuneConfig, params_yaml, print_verdicts, tune
    from wm_vla.runtime.errors import BudgetError
    from wm_vla.runtime.latency.devices import load_device

    _default_checkpoints(args)
    device = load_device(args.device)
    cfg = TuneConfig(budget_ms=args.budget_ms, device=device, policy=args.policy, wm=args.wm,
                     wm_encoder=_latency_wm_encoder(args), robot=args.robot,
                     ks=_ints(args.k), steps=_ints(args.steps), exec_horizons=_ints(args.exec_horizon),
                     decisions=args.decisions, verify_decisions=args.verify_decisions, eval_files=tuple(args.eval),
                     measurements=args.measurements, onnx_cache=args.onnx_cache, progress=not args.no_progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = tune(cfg)
    except BudgetError as exc:
        if exc.report:
            print_verdicts(exc.report)
            out.with_suffix(".json").write_text(json.dumps(exc.report, indent=2))
        print(f"wm-vla: budget too tight: {exc}", file=sys.stderr)
        return 3
    print_verdicts(report)
    c = report["chosen"]
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    yaml_path = out.with_suffix(".yaml")
    yaml_path.write_text(params_yaml(report, device.threads))
    print(f"chosen: {c['backend']} {c['precision']} K={c['k']} steps={c['steps']} exec_horizon={c['exec_horizon']}, "
          f"quality {c['quality']:.3f} ({c['quality_source']}); p99 {c['p99_ms']:.1f} ms in the search, re-measured "
          f"p99 {c['verified_p99_ms']:.1f} ms over {c['verify_decisions']} decisions (budget {report['budget_ms']:g} ms, "
          f"margin {report['margin']:.0%})")
    print(f"wrote {yaml_path} and {out.with_suffix('.json')}")
    return 0


def _need_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        raise CliError(f"choose a command: {parser.format_usage().strip()}")

    return run


WM_ENCODER_HELP = ("policy checkpoint whose encoder gives the world model its latent (it was trained with it as "
                   "--policy); default: the shipped one with the shipped world models, else the acting policy; "
                   "none: the acting policy")


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
    c.add_argument("--no-hindsight", action="store_true",
                   help="do not also label each frame for the scene's other instructions (hindsight relabelling)")
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
    lc.add_argument("--follow", type=int, default=0, help="continue each candidate with the single-sample policy "
                    "for N more decisions before judging it (longer-horizon outcomes)")
    lc.add_argument("--denoise-steps", type=int, default=None,
                    help="Euler steps per sample (default: the policy's own); label the candidates the deployed stack "
                    "will rank")
    lc.add_argument("--no-hindsight", action="store_true",
                    help="do not also label each candidate for the scene's other instructions (hindsight relabelling)")
    lc.add_argument("--task", default=None, help="task families, comma-separated; default: the policy's")
    lc.add_argument("--jobs", type=int, default=1, help="parallel processes (disjoint seeds)")
    lc.add_argument("--execute-wm", default=None, metavar="WM",
                    help="execute this world model's pick (GPC-RANK) instead of a random candidate: label the states "
                    "a ranked robot visits")
    lc.add_argument("--wm-encoder", default=None, help="with --execute-wm: the policy whose latent it ranks in "
                    "(default: --policy's)")
    lc.add_argument("--switch-margin", type=float, default=None,
                    help="with --execute-wm: keep the first sample unless another scores this much higher (default: "
                    "the ranker's, 0.1)")
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
    tp.add_argument("--film", action="store_true",
                    help="condition the CNN on the instruction (FiLM) so it can find the object the instruction names")
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
    tw.add_argument("--hindsight", action="store_true",
                    help="also train on the label folders' hindsight copies (the decisions relabelled for the other "
                    "instructions); needs a latent that carries which object the instruction names")
    tw.add_argument("--hindsight-datasets", action="store_true",
                    help="also train on the --dataset folders' hindsight copies (every recorded frame relabelled for "
                    "the scene's other instructions, as `wm-vla sim collect` records them)")
    tw.add_argument("--instruction-rank-weight", type=float, default=1.0,
                    help="with --hindsight-datasets: weight of the listwise loss across each frame's instructions "
                    "(its own ranked above the relabelled ones); 0: pointwise copies only")
    tw.add_argument("--out", required=True)
    tw.add_argument("--steps", type=int, default=4000)
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--split-seed", type=int, default=None,
                    help="seed of the train / held-out split (default: --seed); give every member of an ensemble "
                    "the same one so that they hold out the same decisions")
    tw.add_argument("--no-progress", action="store_true")
    tw.set_defaults(func=_train_world_model)
    td = train_cmds.add_parser("distill", help="student world model from the teacher on policy candidates")
    td.add_argument("--dataset", required=True, action="append")
    td.add_argument("--policy", required=True)
    td.add_argument("--teacher", required=True, nargs="+",
                    help="teacher world model; several (e.g. seeds): distil from their ensemble's mean prediction")
    td.add_argument("--candidates", action="append", default=[], help="label folders: distil on their candidates")
    td.add_argument("--hindsight", action="store_true",
                    help="also distil on the label folders' hindsight copies (other instructions)")
    td.add_argument("--hindsight-datasets", action="store_true",
                    help="ground truth also on the --dataset folders' hindsight copies (other instructions)")
    td.add_argument("--instruction-rank-weight", type=float, default=1.0,
                    help="with --hindsight-datasets: weight of the listwise KL to the teacher across each frame's "
                    "instructions; 0: off")
    td.add_argument("--out", required=True)
    td.add_argument("--states", type=int, default=1500)
    td.add_argument("--k", type=int, default=8)
    td.add_argument("--extra-states", type=int, default=0,
                    help="with --candidates: also distil on the policy's candidates at this many random dataset states")
    td.add_argument("--ranked-states", action="append", default=[],
                    help="`wm-vla train ranked-states` folders: also distil on the states the ranked stack visits")
    td.add_argument("--steps", type=int, default=4000)
    td.add_argument("--batch-size", type=int, default=256,
                    help="candidates per step; a larger batch trains on more candidates in the same time on a CPU "
                    "(e.g. 1024 with --lr 2e-3)")
    td.add_argument("--student-hidden", type=int, default=None, help="override the student preset's width")
    td.add_argument("--student-layers", type=int, default=None, help="override the student preset's depth")
    td.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine decay to 5%%)")
    td.add_argument("--ground-truth-weight", type=float, default=0.5,
                    help="weight of the recorded chunks' true outcomes beside the teacher's targets; 0: teacher only")
    td.add_argument("--rank-weight", type=float, default=1.0,
                    help="weight of the listwise KL between teacher and student scores over each state's candidates")
    td.add_argument("--rank-temperature", type=float, default=0.05, help="softmax temperature of that KL")
    td.add_argument("--relative-weight", type=float, default=0.0,
                    help="weight of the squared error of each candidate's score gain over the state's first "
                    "candidate (teacher vs student, in switch margins): what the ranker's switch rule compares")
    td.add_argument("--decision-weight", type=float, default=0.0,
                    help="weight of the listwise KL on the scores with the switch margin added to the first "
                    "candidate: the ranker's decision (keep the first sample, or which one to switch to) as the target")
    td.add_argument("--switch-margin", type=float, default=None,
                    help="the switch rule the decision loss, the relative loss and the reported decision agreement use (default: the "
                    "ranker's, wm_vla.runtime.ranker.DEFAULT_SWITCH_MARGIN, 0.1)")
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--no-progress", action="store_true")
    td.set_defaults(func=_train_distill)
    trs = train_cmds.add_parser("ranked-states", help="record the states (world-model latent + K candidates) that "
                                "closed-loop ranked episodes visit, for `train distill --ranked-states`")
    trs.add_argument("--policy", default=None, help="default: the shipped policy")
    trs.add_argument("--wm", default=None, help="the world model that ranks while recording; default: the shipped student")
    trs.add_argument("--wm-encoder", default=None,
                     help="policy whose encoder gives the world model its latent; default: the shipped one with the "
                     "shipped world model, else the acting policy")
    trs.add_argument("--out", required=True)
    trs.add_argument("--world", default="arm")
    trs.add_argument("--episodes", type=int, default=100)
    trs.add_argument("--seed", type=int, default=500_000, help="first episode seed (must stay below the held-out range)")
    trs.add_argument("--k", type=int, default=16)
    trs.add_argument("--switch-margin", type=float, default=0.1)
    trs.add_argument("--no-progress", action="store_true")
    trs.set_defaults(func=_train_ranked_states)

    tt = train_cmds.add_parser("tiny", help="whole CPU pipeline: collect, policy, world model, distil (timed)")
    tt.add_argument("--out", default="outputs/tiny")
    tt.add_argument("--world", default="arm")
    tt.add_argument("--task", default=None,
                    help="task family, or all; default: the world's benchmark task (arm: touch)")
    tt.add_argument("--jobs", type=int, default=2, help="parallel processes for candidate labelling")
    tt.add_argument("--policy-steps", type=int, default=3000)
    tt.add_argument("--wm-steps", type=int, default=3000, help="teacher world model steps")
    tt.add_argument("--distill-steps", type=int, default=3000, help="student distillation steps")
    tt.add_argument("--demos", type=int, default=400, help="expert demonstrations")
    tt.add_argument("--perturbed", type=int, default=200, help="perturbed (noisy) expert episodes with failures")
    tt.add_argument("--label-episodes", type=int, default=120, help="closed-loop episodes whose candidates get labelled")
    tt.add_argument("--label-follow", type=int, default=2,
                    help="judge each candidate after N more single-sample policy decisions (0: right after it)")
    tt.add_argument("--seed", type=int, default=0, help="training seed (policy, teacher, student)")
    tt.add_argument("--ablation", action="store_true", help="also train the FLARE lambda=0 policy")
    tt.add_argument("--policy-demos", type=int, default=None,
                    help="the policies learn from only the first N demonstrations; the world models see all --demos")
    tt.add_argument("--wm-encoder-demos", type=int, default=None, metavar="N",
                    help="the world models rank in the latent of a second, FiLM policy trained on the first N "
                    "demonstrations (shipped as wm_encoder; with --hindsight: the shipped recipe, docs/results.md, issue #3)")
    tt.add_argument("--wm-encoder-steps", type=int, default=None, metavar="N",
                    help="training steps of that encoder (default: --policy-steps)")
    tt.add_argument("--hindsight", action="store_true",
                    help="teacher and student also train on the demonstrations relabelled for the other instructions "
                    "(listwise across them); pays off with --film (docs/results.md, issue #3)")
    tt.add_argument("--film", action="store_true", help="condition the policies' CNN on the instruction (FiLM)")
    tt.add_argument("--no-progress", action="store_true")
    tt.set_defaults(func=_train_tiny)

    md = groups.add_parser("models", help="the shipped tiny checkpoints (wm_vla/models/weights/tiny)")
    md_cmds = md.add_subparsers(dest="command", metavar="COMMAND")
    md.set_defaults(func=_need_command(md))
    ms = md_cmds.add_parser("ship", help="copy a `train tiny` output (without optimiser state) to the shipped folder")
    ms.add_argument("--from", dest="source", default="outputs/tiny", help="a `wm-vla train tiny` output folder")
    ms.add_argument("--policy", default=None, help="override: policy checkpoint")
    ms.add_argument("--wm", default=None, help="override: student world model checkpoint")
    ms.add_argument("--teacher", default=None, help="override: teacher world model checkpoint")
    ms.add_argument("--out", default=None, help="default: wm_vla/models/weights/tiny")
    ms.add_argument("--wm-encoder", default=None, help="override: the world models' encoder policy")
    ms.add_argument("--roles", default="auto", help="which checkpoints to ship (auto: policy, wm_student, wm_teacher, "
                    "and wm_encoder when the source has one)")
    ms.add_argument("--recipe", default="make models", help="the command that regenerates them (kept in the manifest)")
    ms.set_defaults(func=_models_ship)
    mv = md_cmds.add_parser("verify", help="check the shipped files against their manifest and load them")
    mv.add_argument("--root", default=None)
    mv.set_defaults(func=_models_verify)

    ev = groups.add_parser("eval", help="closed-loop evaluation of policy + ranker")
    ev_cmds = ev.add_subparsers(dest="command", required=True, metavar="COMMAND")
    es = ev_cmds.add_parser("sim", help="single-sample vs GPC-RANK(K) vs oracle ranking on held-out seeds")
    es.add_argument("--world", default="arm")
    es.add_argument("--policy", default=None, help="default: the shipped tiny policy (wm_vla/models/weights/tiny)")
    es.add_argument("--wm", default=None, nargs="+", help="(student) world model; several: rank with their ensemble "
                    "(mean prediction); default: the shipped tiny student with the default policy")
    es.add_argument("--episodes", type=int, default=100)
    es.add_argument("--seed", type=int, default=1_000_000, help="first held-out seed")
    es.add_argument("--k", type=int, nargs="+", default=[4, 16, 64])
    es.add_argument("--oracle-k", type=int, default=16, help="0 disables the oracle")
    es.add_argument("--oracle-follow", type=int, default=0, help="the oracle follows each candidate with the "
                    "single-sample policy for N more decisions before judging it")
    es.add_argument("--ablation-policy", default=None, help="e.g. the FLARE lambda=0 policy")
    es.add_argument("--out", default=None, help="write OUT.json and OUT.png")
    es.add_argument("--jobs", type=int, default=1, help="evaluate configurations in N parallel processes")
    es.add_argument("--exec-horizon", type=int, default=None, help="override: actions executed per decision")
    es.add_argument("--denoise-steps", type=int, default=None, help="override: Euler steps per sample")
    es.add_argument("--teacher", default=None, nargs="+", help="also rank each decision with this (teacher) world "
                    "model, or the ensemble of several, and report top-1 agreement with --wm on the real decisions")
    es.add_argument("--switch-margin", type=float, default=None,
                    help="ranker keeps the policy's first sample unless another scores this much higher "
                    "(default: wm_vla.runtime.ranker.DEFAULT_SWITCH_MARGIN, 0.1)")
    es.add_argument("--disagreement-weight", type=float, default=0.0,
                    help="with several --wm: subtract this times the members' spread of each candidate's score")
    es.add_argument("--task", default=None, help="task families, comma-separated (arm: touch,push,place); "
                    "default: the families in the policy's training instructions")
    es.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
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

    ex = groups.add_parser("export", help="ONNX export: encoder, unrolled sampler (+FLARE head), student world model")
    ex.add_argument("--policy", required=True, help="policy checkpoint directory")
    ex.add_argument("--wm", default=None, help="(student) world model checkpoint; omit for a policy-only export")
    ex.add_argument("--out", required=True, help="directory for encoder/sampler/world_model.onnx + export.json")
    ex.add_argument("--steps", type=int, default=None, help="Euler steps unrolled in the sampler (default: the policy's)")
    ex.add_argument("--opset", type=int, default=20, help="ONNX opset (TensorRT 10 parses 9-20)")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch parity check (K=1, 16)")
    ex.set_defaults(func=_export)

    en = groups.add_parser("engines", help="TensorRT engines: operator check, build (cached per GPU), verify")
    en_cmds = en.add_subparsers(dest="command", metavar="COMMAND")
    en.set_defaults(func=_need_command(en))
    ec = en_cmds.add_parser("check", help="check the exported graphs against TensorRT's ONNX operator list (no GPU)")
    ec.add_argument("--onnx", required=True, help="`wm-vla export` directory")
    ec.set_defaults(func=_engines_check)
    for name, helptext in (("build", "build (or reuse) engines for this GPU into the cache"),
                           ("verify", "parity of the engines vs onnxruntime (cosine >= 0.999)")):
        e = en_cmds.add_parser(name, help=helptext)
        e.add_argument("--onnx", required=True, help="`wm-vla export` directory")
        e.add_argument("--engines", default="trt_engines", help="engine cache directory (manifest.json inside)")
        e.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
        e.add_argument("--device", default="cuda")
        e.add_argument("--k-profile", type=_ints, default=(1, 16, 64), help="min,opt,max K of the optimisation profile")
        e.add_argument("--calib-dataset", default=None, help="int8: LeRobot dataset whose frames calibrate")
        e.add_argument("--calib-frames", type=int, default=64)
        if name == "build":
            e.add_argument("--rebuild", action="store_true", help="rebuild even when a matching engine is cached")
            e.set_defaults(func=_engines_build)
        else:
            e.add_argument("--k", type=_ints, default=(1, 16), help="K values to compare")
            e.add_argument("--min-cosine", type=float, default=0.999)
            e.add_argument("--no-build", action="store_true", help="fail instead of rebuilding missing/stale engines")
            e.set_defaults(func=_engines_verify)

    la = groups.add_parser("latency", help="decision latency: benchmark backends, profile stages, tune to a budget")
    la_cmds = la.add_subparsers(dest="command", metavar="COMMAND")
    la.set_defaults(func=_need_command(la))
    lb = la_cmds.add_parser("bench", help="decision latency per backend and K, interleaved in one run; JSON + PNG")
    lb.add_argument("--policy", default=None, help="default: the shipped tiny policy (wm_vla/models/weights/tiny)")
    lb.add_argument("--wm", default=None, help="default: the shipped tiny student with the default policy")
    lb.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
    lb.add_argument("--onnx", default=None, help="existing export (default: export to a temporary directory)")
    lb.add_argument("--backends", default="torch,onnxruntime", help="comma-separated: torch, onnxruntime, tensorrt")
    lb.add_argument("--k", default="1,4,16,64", help="comma-separated K values")
    lb.add_argument("--iters", type=int, default=50, help="measured decisions per configuration")
    lb.add_argument("--warmup", type=int, default=3)
    lb.add_argument("--robot", default="arm", help="robot profile for the kinematic penalty, or none")
    lb.add_argument("--threads", type=int, default=None, help="intra-op threads for every backend (default: cores)")
    lb.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    lb.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"], help="tensorrt precision")
    lb.add_argument("--engines", default="trt_engines")
    lb.add_argument("--seed", type=int, default=0)
    lb.add_argument("--out", default=None, help="write OUT.json and OUT.png")
    lb.add_argument("--no-progress", action="store_true")
    lb.set_defaults(func=_latency_bench)
    lp = la_cmds.add_parser("profile", help="per-stage latency (capture .. executor), p50/p90/p99/max, memory, CPU load; "
                                            "table + JSON + PNG")
    lt = la_cmds.add_parser("tune", help="best expected quality whose measured p99 fits --budget-ms on --device; "
                                         "writes a params YAML")
    for p in (lp, lt):
        p.add_argument("--policy", default=None, help="default: the checkpoints of `wm-vla train tiny`")
        p.add_argument("--wm", default=None, help="student world model (default: with the default policy)")
        p.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
        p.add_argument("--robot", default="sim", choices=["sim", "arm"],
                       help="capture source: sim (MuJoCo render) or arm (JPEG-decoded camera-sized frames)")
        p.add_argument("--k", default="1,4,16,64", help="comma-separated K values")
        p.add_argument("--steps", default="4,8,10", help="comma-separated denoising steps")
        p.add_argument("--onnx-cache", default="outputs/latency/exports", help="exports per steps value are kept here")
        p.add_argument("--no-progress", action="store_true")
    lp.add_argument("--backend", default="onnxruntime", help="comma-separated: onnxruntime, torch, tensorrt")
    lp.add_argument("--precision", default=None, help="comma-separated precisions for every backend (default: fp32; "
                                                      "tensorrt fp16)")
    lp.add_argument("--decisions", type=int, default=500, help="measured decisions per configuration")
    lp.add_argument("--warmup", type=int, default=3)
    lp.add_argument("--threads", type=int, default=None, help="intra-op threads (default: OMP_NUM_THREADS or cores)")
    lp.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    lp.add_argument("--seed", type=int, default=0)
    lp.add_argument("--out", default=None, help="write OUT.json and OUT.png")
    lp.set_defaults(func=_latency_profile)
    lt.add_argument("--budget-ms", type=float, default=None, help="decision p99 budget (default: the device's)")
    lt.add_argument("--device", default="cpu-2core", help="device profile name (config/devices) or YAML path")
    lt.add_argument("--exec-horizon", default="4,8", help="comma-separated execution horizons (actions per chunk)")
    lt.add_argument("--decisions", type=int, default=100, help="decisions per configuration in the search")
    lt.add_argument("--verify-decisions", type=int, default=300, help="decisions re-measuring the chosen config")
    lt.add_argument("--eval", action="append", default=[], help="`wm-vla eval` JSON with success rates (repeatable)")
    lt.add_argument("--measurements", default=None, help="a `wm-vla latency profile` JSON instead of measuring")
    lt.add_argument("--out", default="outputs/latency/tuned", help="writes OUT.yaml (params) and OUT.json")
    lt.set_defaults(func=_latency_tune)

    sd = sim_cmds.add_parser("demo", help="collect and render a few expert episodes in both worlds")
    sd.add_argument("--out", default="outputs/sim_demo")
    sd.add_argument("--seed", type=int, default=0)
    sd.set_defaults(func=_sim_demo)

    up = groups.add_parser("up", help="run the ROS 2 stack of a robot (the plan of launch/robot.launch.py) "
                                      "without ros2 launch")
    up.add_argument("--robot", default="sim", help="arm | quadruped | sim | sim_quadruped")
    up.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt | auto")
    up.add_argument("--k", type=int, default=16, help="candidate chunks per decision")
    up.add_argument("--denoise-steps", type=int, default=0, help="Euler steps per sample (0: the policy's own)")
    up.add_argument("--params-file", default=None, help="YAML {node: {ros__parameters: {...}}} overrides")
    up.add_argument("--use-sim-time", action="store_true", help="sim publishes /clock; nodes use it")
    up.add_argument("--rate-scale", type=float, default=1.0, help="sim speed vs real time (with --use-sim-time)")
    up.add_argument("--no-rank", action="store_true", help="execute the policy's first sample (no world model)")
    up.add_argument("--seed", type=int, default=1_000_000, help="sim: seed of the first episode")
    up.add_argument("--policy", default=None)
    up.add_argument("--wm", default=None, help="student world model checkpoint")
    up.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
    up.add_argument("--log-dir", default=None, help="write one log per node there (default: to the terminal)")
    up.add_argument("--record-bag", default=None, metavar="DIR",
                    help="record the stack's inputs and outputs to an mcap bag in DIR (then: wm-vla bag eval DIR)")
    up.add_argument("--teleop", default=None, choices=("keyboard", "joy", "spacemouse", "leader"),
                    help="teleoperate (launch/teleop_record.launch.py); keyboard reads this terminal in raw mode")
    up.add_argument("--record", default=None, metavar="DIR", help="record a LeRobot dataset there (recorder_node: "
                    "services /recorder_node/start|stop|discard|rerecord; a finished sim episode is saved)")
    up.add_argument("--intervene", action="store_true", help="with --teleop: the policy drives, teleop takes over")
    up.add_argument("--record-fps", type=int, default=0, help="dataset fps (default: the profile's policy rate)")
    up.add_argument("--teleop-max-linear", type=float, default=0.15,
                    help="with --teleop on the arm: gripper speed at full deflection, m/s")
    up.add_argument("--command-interface", default=None, choices=("position_commands", "joint_trajectory"),
                    help="arm output: forward position controllers (default) or JointTrajectory to the JTC")
    up.add_argument("--inference-cpus", default="auto",
                    help="CPUs of vla_node and its sampler process; the other nodes get the rest. auto: the last "
                    "usable CPU when there are 2 or more; off: no pinning; or a list such as 3 or 2-3")
    up.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit")
    up.set_defaults(func=_up)

    d = groups.add_parser("demo", help="the ROS 2 stack on the sim: N episodes ranked and single-sample, "
                                       "success + camera->command latency, JSON + PNG")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--episodes", type=int, default=10, help="episodes per configuration")
    d.add_argument("--k", type=int, default=16)
    d.add_argument("--seed", type=int, default=1_000_000, help="first episode seed (held-out range)")
    d.add_argument("--backend", default="torch")
    d.add_argument("--denoise-steps", type=int, default=0, help="Euler steps per sample (0: the policy's own)")
    d.add_argument("--policy", default=None, help="default: the default checkpoints")
    d.add_argument("--wm", default=None)
    d.add_argument("--wm-encoder", default=None, help=WM_ENCODER_HELP)
    d.add_argument("--rate-scale", type=float, default=1.0, help="< 1: sim on its own /clock, slower than real time")
    d.add_argument("--params-file", default=None,
                   help="YAML {node: {ros__parameters: {...}}} overrides for both stacks (as `wm-vla up`)")
    d.set_defaults(func=_demo)

    _add_bag_commands(groups)
    _add_teleop_commands(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from wm_vla.models.errors import ModelError
    from wm_vla.runtime.errors import RuntimeErrorBase
    from wm_vla.sim.errors import SimError
    from wm_vla.training.errors import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, SimError, DataError, RobotError, ModelError, TrainingError, RuntimeErrorBase, ValueError,
            FileNotFoundError) as exc:
        print(f"wm-vla: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
