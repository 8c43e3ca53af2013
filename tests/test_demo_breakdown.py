"""The demo's per-decision latency split (ROS-free): exact parts from each RankingResult's stages."""

from __future__ import annotations

import pytest

from wm_vla.eval.ros_demo import decision_breakdown


def _decision(age: float, queue: float, total: float, decision: float) -> dict[str, float]:
    return {"decode": 0.1, "wm_rollout": total / 2, "score": total / 4, "total": total,
            "candidates_age": age, "queue": queue, "decision": decision}


def test_parts_are_per_decision_and_the_result_hop_is_what_remains() -> None:
    episodes = [{"rank_stages": [_decision(200, 0.5, 2, 203.5), _decision(220, 1.5, 2, 224.5)],
                 "vla_stage_ms": {"total_ms_p50": 180.0}},
                {"rank_stages": [_decision(240, 1.0, 4, 246.0)], "vla_stage_ms": {"total_ms_p50": 190.0}}]
    parts = decision_breakdown(episodes)
    assert parts["candidates_age"] == 220 and parts["queue"] == 1.0 and parts["ranking"] == 2
    assert parts["result_hop"] == pytest.approx(1.0)   # 203.5-200-0.5-2, 224.5-220-1.5-2, 246-240-1-4
    assert parts["decision"] == 224.5 and parts["vla_inference"] == 185.0


@pytest.mark.parametrize("episodes", [
    [],                                                                  # no episode
    [{"rank_stages": []}],                                               # no decision reached the client
    [{"rank_stages": [{"decode": 0.1, "total": 2.0, "decision": 9.0}]}],  # an older world_model_node: no arrival stages
])
def test_without_arrival_stages_there_is_no_split(episodes: list[dict[str, object]]) -> None:
    assert decision_breakdown(episodes) == {}


def test_without_vla_diagnostics_the_split_has_no_inference_figure() -> None:
    parts = decision_breakdown([{"rank_stages": [_decision(200, 0.5, 2, 203.5)], "vla_stage_ms": {}}])
    assert "vla_inference" not in parts and parts["candidates_age"] == 200
