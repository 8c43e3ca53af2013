"""Does running perception_node, vla_node and world_model_node in ONE process cut the ROS decision's overhead?

docs/ros_stack.md traced the ROS decision's extra time to two places: the path (sim camera -> perception_node ->
Observation -> vla_node -> ActionCandidates -> world_model_node: two Python executors and DDS hops between
processes) and vla_node's sampling running slower in the stack than in-process. Two nodes in one process and one
executor pass a message on in ~0.2 ms against ~0.6-0.9 ms between processes, so composing the three model-side nodes
(one rclpy context, one SingleThreadedExecutor, Fast DDS delivering within the process) is the obvious next cut.
This runs `wm-vla demo` (onnxruntime, the default checkpoints) once per layout and compares:

- `separate`: the shipped plan, one process per node (vla_node and its sampler process alone on the inference CPU);
- `composed_other_cpu`: the three nodes in one process on the CPU(s) of the sim; only the sampler process on the
  inference CPU (frames never wake the sampler's CPU, but they share a CPU with the sim);
- `composed_inference_cpu`: the three nodes and the sampler process together on the inference CPU;
- `perception_fifo`: the shipped plan with perception_node started under `chrt -f 5` (SCHED_FIFO for all its
  threads: frames no longer wait behind the sim; needs root or CAP_SYS_NICE).

Every layout runs the same episodes (held-out seeds) and measures its own in-process reference in the same run
(`wm-vla demo` does), so the ratios are comparable; one run per layout is noisy (+-0.03 between identical runs).

    python benchmarks/composed_nodes.py --steps 7 --episodes 8 --out outputs/bench/composed

Results already in OUT are reused (resumable). Needs 2+ CPUs for the pinned layouts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wm_vla.bringup import NodeSpec

MODEL_NODES = ("perception_node", "vla_node", "world_model_node")
LAYOUTS = ("separate", "composed_other_cpu", "composed_inference_cpu", "perception_fifo")
COMPOSED = "model_nodes"  # the composed process's name in the plan (and its log file)


def serve(argv: list[str]) -> None:
    """The composed process: the three nodes, one executor, pinned as the environment says."""
    import os

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from node_common.spin import exit_with_parent
    from perception_node.node import Perception
    from vla_node.node import VlaNode
    from wm_vla.cpus import parse_cpu_list, pin_process
    from world_model_node.node import WorldModelNode

    exit_with_parent()
    rclpy.init(args=argv)
    process_cpus = parse_cpu_list(os.environ.get("COMPOSED_CPUS", ""))
    sampler_cpus = parse_cpu_list(os.environ.get("COMPOSED_SAMPLER_CPUS", ""))
    if process_cpus:
        pin_process(process_cpus)  # before the sampler process starts: it inherits this unless told otherwise
    perception, vla, wm = Perception(), VlaNode(), WorldModelNode()
    executor = SingleThreadedExecutor()
    for node in (perception, vla, wm):
        executor.add_node(node)
    try:
        for node in (vla, wm):
            node.trigger_configure()
            node.trigger_activate()
        if sampler_cpus and getattr(vla.backend, "pid", None):
            os.sched_setaffinity(vla.backend.pid, sampler_cpus)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for node in (perception, vla, wm):
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def compose(plan: list[NodeSpec]) -> list[NodeSpec]:
    """The plan with its three model-side nodes replaced by one process spec holding each node's parameters (less
    `cpu_affinity`: the layout pins the composed process and its sampler process itself)."""
    from wm_vla.bringup import NodeSpec

    if any(n.remappings for n in plan if n.name in MODEL_NODES):
        raise SystemExit("remappings are not supported by this benchmark's composed process")
    missing = [n for n in MODEL_NODES if n not in {s.name for s in plan}]
    if missing:
        raise SystemExit(f"the plan has no {missing} to compose")
    params = {n.name: {k: v for k, v in n.parameters.items() if k != "cpu_affinity"}
              for n in plan if n.name in MODEL_NODES}
    return [n for n in plan if n.name not in MODEL_NODES] + [
        NodeSpec(COMPOSED, COMPOSED, "benchmarks.composed_nodes", {"nodes": params})]


def run_layout(layout: str, steps: int, episodes: int, out: Path) -> None:
    """One `wm-vla demo` with the model nodes laid out as `layout` (run in a child: the patches stay there)."""
    import os

    import yaml

    from wm_vla.cpus import inference_split
    from wm_vla.eval import ros_demo
    from wm_vla.launcher import Stack

    split = inference_split("auto")
    if layout == "perception_fifo":
        import shutil

        if shutil.which("chrt") is None:
            raise SystemExit("perception_fifo needs chrt (util-linux) and the right to use SCHED_FIFO")

        class FifoPerceptionStack(Stack):
            def command(self, spec: NodeSpec) -> list[str]:
                cmd = super().command(spec)
                return ["chrt", "-f", "5", *cmd] if spec.name == "perception_node" else cmd

        ros_demo.Stack = FifoPerceptionStack  # type: ignore[misc]
    elif layout != "separate":
        if split is None:
            raise SystemExit(f"{layout} needs 2 or more usable CPUs")
        inference, others = split
        process_cpus, sampler_cpus = (others, inference) if layout == "composed_other_cpu" else (inference, "")
        os.environ.update(COMPOSED_CPUS=process_cpus, COMPOSED_SAMPLER_CPUS=sampler_cpus)
        shipped_plan = ros_demo.demo_plan

        def composed_plan(cfg: ros_demo.DemoConfig, rank: bool) -> list[NodeSpec]:
            return compose(shipped_plan(cfg, rank))

        class ComposedStack(Stack):
            def command(self, spec: NodeSpec) -> list[str]:
                if spec.name != COMPOSED:
                    return super().command(spec)
                path = Path(self._tmp.name) / f"{COMPOSED}.yaml"  # one params file, one section per node name
                path.write_text(yaml.safe_dump({name: {"ros__parameters": p}
                                                for name, p in spec.parameters["nodes"].items()}))
                return [sys.executable, str(Path(__file__).resolve()), "--serve", "--ros-args", "--params-file",
                        str(path)]

        ros_demo.demo_plan = composed_plan
        ros_demo.Stack = ComposedStack  # type: ignore[misc]
    ros_demo.run_demo(ros_demo.DemoConfig(episodes=episodes, backend="onnxruntime", denoise_steps=steps,
                                          out=str(out / layout)))


def row(layout: str, report: dict[str, Any]) -> dict[str, Any]:
    ros = report["decision_breakdown_ms_p50"]["ros"]
    return {"layout": layout, "ros_decision_ms_p50": report["decision_ms_ros_p50"],
            "inprocess_decision_ms_p50": report["decision_ms_inprocess_p50"],
            "ratio": report["decision_ratio_ros_over_inprocess"],
            "camera_to_command_ms_p99": report["latency_ms_p99"],
            "vla_inference_ms_p50": ros["vla_inference"],
            "inprocess_inference_ms_p50": report["decision_breakdown_ms_p50"]["inprocess"]["inference"],
            "path_ms_p50": ros["candidates_age"] - ros["vla_inference"],
            "success_ranked": report["success_rate_ranked"], "episodes": report["episodes"]}


def main() -> None:
    if "--serve" in sys.argv:
        serve([a for a in sys.argv if a != "--serve"])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    ap.add_argument("--steps", type=int, default=7, help="Euler steps per sample (7: p99 under 60 ms here)")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per stack (ranked and single)")
    ap.add_argument("--out", default="outputs/bench/composed")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.one:
        run_layout(args.one, args.steps, args.episodes, out)
        return
    layouts = [s for s in args.layouts.split(",") if s]
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise SystemExit(f"unknown layout(s) {unknown}; choose from {', '.join(LAYOUTS)}")
    rows = []
    for layout in layouts:
        report = out / layout / "report.json"
        if not report.is_file():
            print(f"+ {layout}: wm-vla demo --backend onnxruntime --denoise-steps {args.steps} --episodes "
                  f"{args.episodes}", flush=True)
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", layout, "--steps",
                            str(args.steps), "--episodes", str(args.episodes), "--out", str(out)], check=True)
        rows.append(row(layout, json.loads(report.read_text())))
    print(f"{'layout':24s} {'ROS decision':>12s} {'in-process':>10s} {'ratio':>6s} {'p99 cam->cmd':>12s} "
          f"{'path':>6s} {'inference ROS/in-proc':>22s}")
    for r in rows:
        print(f"{r['layout']:24s} {r['ros_decision_ms_p50']:9.1f} ms {r['inprocess_decision_ms_p50']:7.1f} ms "
              f"{r['ratio']:6.2f} {r['camera_to_command_ms_p99']:9.1f} ms {r['path_ms_p50']:4.1f} ms "
              f"{r['vla_inference_ms_p50']:10.1f} / {r['inprocess_inference_ms_p50']:.1f} ms")
    (out / "composed_nodes.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=1))
    print(f"wrote {out / 'composed_nodes.json'}")


if __name__ == "__main__":
    main()
