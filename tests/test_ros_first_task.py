"""The stack's start-up over real rclpy / Fast DDS: the latched instruction can reach world_model_node after vla_node's
first candidates, and the demo's episode client must not count a decision taken while the stack was still starting.
Its own module: each case starts a fresh world_model_node (the first instruction it ever sees matters), which must
not share the domain with test_ros_safety's module-scoped node."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from std_msgs.msg import String

from sim_node.episodes import EpisodeClient, spin_in_thread
from test_ros_safety import HOME, running_rig, tracked

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("first_task", ["touch the red cube", "touch the blue cube"])
def test_a_chunk_for_the_first_task_survives_its_late_latched_instruction(ros_domain: int, tmp_path: Path,
                                                                           first_task: str) -> None:
    """At start-up vla_node's first candidates can reach world_model_node before the latched instruction does (DDS
    discovery order; seen in `wm-vla demo`: the arm started, held for a decision, started again). A chunk computed
    for that same first task keeps streaming; one computed for another task is cleared; any later instruction,
    even with the same words (a new episode), clears as before."""
    with running_rig({"rank": False}, tmp_path) as rig:
        chunk = np.tile(HOME, (60, 1))            # 6 s of actions
        chunk[:, 0] = np.linspace(0.0, 0.6, 60)   # a slow pan
        stamp = rig.candidates(chunk, instruction="touch the red cube")
        rig.probe.wait(lambda: any(lin == stamp for _, _, lin in tracked(rig.forward)), 5.0, "the chunk to stream")

        def take_task(n: int) -> list[int]:
            rig.instr_pub.publish(String(data=first_task))
            rig.probe.wait(lambda: (rig.diag_value("instructions") or 0) >= n, 10.0, f"the node to count task {n}")
            t = rig.probe.now()
            time.sleep(0.3)
            return [lin for _, _, lin in tracked(rig.forward, t)]

        after = take_task(1)
        if first_task == "touch the red cube":
            assert after and all(lin == stamp for lin in after), "the chunk for the first task must keep streaming"
            after = take_task(2)
        assert after and all(lin == 0 for lin in after), "a chunk for another (or an earlier) task must be cleared"


def test_warm_up_without_any_command_from_an_observation_times_out_clearly(ros_domain: int) -> None:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    client = EpisodeClient("arm", context=ctx)
    ex, thread = spin_in_thread(client)
    try:
        with pytest.raises(TimeoutError, match="no command computed from an observation within 0.3 s"):
            client.warm_up(0.3)
    finally:
        ex.shutdown()
        thread.join(5)
        client.destroy_node()
        rclpy.shutdown(context=ctx)
