"""Recording fps achieved vs target (recorder_node over ROS 2, 2 cameras) and `wm-vla bag to-lerobot` throughput.

Recorder: a publisher node streams 2 rgb8 cameras (--width x --height) at the camera rate, joint states at 100 Hz and
position commands at 50 Hz; recorder_node (real subprocess, started with wm_vla.launcher.Stack) records --episodes
episodes of --seconds each at --fps through its services. Achieved fps = saved frames / (stop - start) per episode;
dropped = ticks without a fresh sample, by reason (from the recorder's /diagnostics).
Converter: a sim bag (`wm-vla bag sim` content, 2 cameras) converted with the converter; frames/s and the ratio of
bag time to wall time.

    python benchmarks/teleop_record.py --out outputs/teleop/record_bench
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def record_fps(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger

    from node_common.msgs import COMMAND_QOS, SENSOR_QOS, rgb_to_image
    from wm_vla.bringup import NodeSpec
    from wm_vla.data.lerobot_io import load_dataset
    from wm_vla.launcher import Stack
    from wm_vla.robots import load_profile

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    arm = load_profile("arm")
    root = work / "record_ds"
    cams = ("front", "wrist")
    spec = NodeSpec("recorder_node", "recorder_node", "recorder_node.node", {
        "robot": "arm", "root": str(root), "fps": args.fps, "camera_names": list(cams),
        "camera_topics": [f"/bench/{c}" for c in cams], "image_size": args.image_size, "min_free_mb": 10.0})
    rclpy.init()
    node = Node("record_bench")
    pubs = {c: node.create_publisher(Image, f"/bench/{c}", SENSOR_QOS) for c in cams}
    js = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
    fwd = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
    grip = node.create_publisher(Float64MultiArray, "/gripper_controller/commands", COMMAND_QOS)
    diag: list[dict[str, str]] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.extend(
        {kv.key: kv.value for kv in s.values} for s in m.status if s.name.endswith("recorder_node")), 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    frames = [np.random.default_rng(i).integers(0, 256, (args.height, args.width, 3), np.uint8) for i in range(8)]
    running = threading.Event()
    running.set()

    def loop(period: float, fn: Any) -> None:
        k, t_next = 0, time.monotonic()
        while running.is_set():
            fn(k)
            k += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))

    def cameras(k: int) -> None:
        stamp = node.get_clock().now().to_msg()
        for c, pub in pubs.items():
            pub.publish(rgb_to_image(frames[k % len(frames)], stamp, c))

    def state(k: int) -> None:
        msg = JointState(name=list(arm.action.names), position=[0.001 * k] * 7)
        msg.header.stamp = node.get_clock().now().to_msg()
        js.publish(msg)

    def commands(k: int) -> None:
        fwd.publish(Float64MultiArray(data=[0.001 * k] * 6))
        grip.publish(Float64MultiArray(data=[0.02, 0.02]))

    threads = [threading.Thread(target=loop, args=a, daemon=True)
               for a in ((1 / args.camera_hz, cameras), (0.01, state), (0.02, commands))]
    for t in threads:
        t.start()

    def call(name: str) -> Trigger.Response:
        cli = node.create_client(Trigger, f"/recorder_node/{name}")
        assert cli.wait_for_service(timeout_sec=120), "no recorder_node"
        fut = cli.call_async(Trigger.Request())
        while not fut.done():
            time.sleep(0.01)
        node.destroy_client(cli)
        return fut.result()

    episodes = []
    try:
        with Stack([spec], log_dir=work / "logs"):
            deadline = time.monotonic() + 60
            while not (res := call("start")).success and time.monotonic() < deadline:  # streams still matching
                time.sleep(1.0)
            assert res.success, res.message
            call("discard")
            for _ in range(args.episodes):
                res = call("start")
                assert res.success, res.message
                t0 = time.monotonic()
                time.sleep(args.seconds)
                t1 = time.monotonic()
                res = call("stop")
                assert res.success, res.message
                n = int(res.message.split(": ")[1].split()[0])
                episodes.append({"frames": n, "seconds": round(t1 - t0, 3), "fps": round(n / (t1 - t0), 2)})
                print(f"episode: {n} frames in {t1 - t0:.2f} s -> {n / (t1 - t0):.2f} fps (target {args.fps})",
                      flush=True)
                time.sleep(1.5)  # the recorder's next /diagnostics (camera rates) before the last episode ends
    finally:
        running.clear()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    lengths = [int(x) for x in load_dataset(root).meta.episodes["length"]]
    last = diag[-1] if diag else {}
    fps = [e["fps"] for e in episodes]
    return {"target_fps": args.fps, "cameras": len(cams), "camera_hz": args.camera_hz,
            "camera_size": [args.width, args.height], "image_size": args.image_size, "episodes": episodes,
            "fps_mean": round(float(np.mean(fps)), 2), "fps_ratio_to_target": round(float(np.mean(fps)) / args.fps, 3),
            "dataset_lengths": lengths, "dropped": {k: v for k, v in last.items() if k.startswith("dropped")},
            "camera_hz_received": {k: float(v) for k, v in last.items() if k.startswith("camera_")}}


def converter_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from wm_vla.data.bags.simbag import SimBagConfig, record_sim_bag
    from wm_vla.data.bags.to_lerobot import ConvertConfig, convert_bag

    bag, summary = record_sim_bag(SimBagConfig(out=work / "bag", episodes=args.bag_episodes, image_size=96,
                                               gap_s=1.5))
    report = convert_bag(ConvertConfig(bag, work / "converted", cameras=("front", "wrist"), image_size=96))
    wall = report["read_s"] + report["write_s"]
    out = {k: report[k] for k in ("episodes", "frames", "read_s", "write_s", "frames_per_second", "bag_duration_s")}
    out["bag_seconds_per_wall_second"] = round(report["bag_duration_s"] / wall, 2)
    print(f"converter: {report['frames']} frames ({report['episodes']} episodes, 2 cameras) in {wall:.2f} s -> "
          f"{report['frames_per_second']} frames/s, {out['bag_seconds_per_wall_second']}x bag real time", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/teleop/record_bench")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bag-episodes", type=int, default=4)
    args = ap.parse_args()
    from wm_vla.eval.plots import write_json

    with tempfile.TemporaryDirectory(prefix="wm_vla_record_bench_") as tmp:
        rec = record_fps(args, Path(tmp))
        conv = converter_throughput(args, Path(tmp))
    report = {"recorder": rec, "converter": conv}
    json_path, png_path = write_json(report, Path(args.out))
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.bar([f"ep {i}" for i in range(len(rec["episodes"]))], [e["fps"] for e in rec["episodes"]], color="tab:blue")
    a.axhline(args.fps, color="k", ls="--", label=f"target {args.fps} Hz")
    a.set_ylabel("recorded fps (2 cameras)")
    a.legend(loc="lower right")
    b.bar(["converter"], [conv["frames_per_second"]], color="tab:green")
    b.set_ylabel("frames / s (wall)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
