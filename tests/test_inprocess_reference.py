"""The in-process reference of `wm-vla demo`'s ROS/in-process ratio decides at the stack's cadence."""

from __future__ import annotations

import time

from wm_vla.eval.ros_demo import DemoConfig, decision_period_s, inprocess_decision_ms
from wm_vla.training.pipeline import default_checkpoints


def test_decision_period_is_the_policys_execution_horizon_at_the_policy_rate() -> None:
    policy, _ = default_checkpoints()
    assert decision_period_s(str(policy), 10.0) == 0.8  # the tiny preset runs 8 of its actions per decision
    assert decision_period_s(str(policy), 20.0) == 0.4


def test_paced_reference_takes_one_decision_per_period() -> None:
    cfg = DemoConfig(k=1)
    t0 = time.perf_counter()
    paced = inprocess_decision_ms(cfg, n=2)
    paced_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back_to_back = inprocess_decision_ms(cfg, n=2, paced=False)
    b2b_s = time.perf_counter() - t0
    assert len(paced) == len(back_to_back) == 2 and all(s["total"] > 0 for s in paced + back_to_back)
    assert paced_s >= 2 * 0.8  # two timed decisions, each a period after the one before
    assert paced_s - b2b_s > 1.0
