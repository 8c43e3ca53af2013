"""Round trip (issue #6): the live sim stack over ROS 2 records itself with the bag_recorder node; `bag eval` on
that bag reproduces every live decision (same candidates from the recorded observation and noise seed, same
choice of the world model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rclpy

from sim_node.episodes import EpisodeClient, spin_in_thread
from wm_vla.bringup import BringupArgs, build_plan
from wm_vla.cli import main
from wm_vla.data.bags import BagReader
from wm_vla.launcher import Stack
from wm_vla.training.pipeline import default_checkpoints

pytestmark = [pytest.mark.ros, pytest.mark.e2e]
DECISIONS = 5


def test_live_stack_recording_is_replayed_exactly_by_bag_eval(ros_domain: int, tmp_path: Path) -> None:
    policy, wm = (str(p.resolve()) for p in default_checkpoints())
    bag = tmp_path / "live_bag"
    plan = build_plan(BringupArgs(robot="sim", seed=1_000_000, k=8, policy=policy, world_model=wm,
                                  use_sim_time=True, rate_scale=0.25, record_bag=str(bag)))
    assert "bag_recorder" in {n.name for n in plan}
    with Stack(plan, log_dir=tmp_path / "logs") as stack:
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        client = EpisodeClient("arm", context=ctx, use_sim_time=True)
        executor, thread = spin_in_thread(client)
        try:
            assert client.wait_for(lambda st: st.get("episode") == 0, 120), "the sim did not start its episode"
            decisions = 0
            for episode in range(4):  # episodes end early on success or collision: reset until enough decisions
                result = client.run_episode(timeout=120, reset=episode > 0)
                decisions += len(result["decision_ms"])
                if decisions >= DECISIONS + 1 or stack.failed():
                    break
        finally:
            executor.shutdown()
            thread.join(5)
            client.destroy_node()
            rclpy.shutdown(context=ctx)
        assert not stack.failed(), stack.log("bag_recorder") + stack.log("world_model_node")
        assert decisions > DECISIONS, f"only {decisions} live decisions in 4 episodes"
    # the stack stopped (SIGINT): the recorder closed its mcap part
    with BagReader(bag) as reader:
        topics = set(reader.topics)
    assert {"/wm_vla/observation", "/wm_vla/action_candidates", "/wm_vla/ranking_result", "/joint_states",
            "/forward_position_controller/commands", "/diagnostics"} <= topics
    out = tmp_path / "eval"
    assert main(["bag", "eval", str(bag), "--policy", policy, "--wm", wm, "--threads", "1", "--no-progress",
                 "--out", str(out)]) == 0
    s = json.loads((out / "report.json").read_text())["summary"]
    assert s["mode"] == "stack"
    replay = s["replay"]
    assert replay["decisions"] >= DECISIONS and replay["with_recorded_choice"] >= DECISIONS
    assert replay["max_abs_diff"] <= 1e-5, replay                 # the same candidates from the same seed
    assert replay["chosen_match"] == replay["with_recorded_choice"], replay   # and the same choice
