"""Wilson score intervals against published values; paired tests; the bootstrap interval of a ratio of medians."""

from __future__ import annotations

import numpy as np
import pytest

from wm_vla.eval.stats import paired, wilson


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (38, 40, 0.8350, 0.9862),
])
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    rate = wilson(k, n)
    assert rate.low == pytest.approx(low, abs=1e-4)
    assert rate.high == pytest.approx(high, abs=1e-4)
    assert rate.value == k / n


def test_paired_counts_discordant_episodes_and_gives_the_exact_mcnemar_p() -> None:
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [True] * 10 + [True] * 2 + [False] * 5
    result = paired(a, b)
    assert (result.both, result.only_a, result.only_b, result.neither) == (10, 5, 2, 0)
    assert result.p_value == pytest.approx(2 * (1 + 7 + 21) / 2**7)  # two-sided binomial(7, 1/2) tail at 2
    assert paired([True, False], [True, False]).p_value == 1.0  # no discordant pairs: no evidence either way
    assert paired([True] * 12, [False] * 12).p_value == pytest.approx(2 / 2**12)
    with pytest.raises(ValueError, match="same episodes"):
        paired([True], [True, False])


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_pool_paired_pools_reports_and_refuses_ones_without_per_episode_outcomes(tmp_path, capsys) -> None:
    import json

    from script_helpers import load_script

    module = load_script("benchmarks/pool_paired.py")
    report = {"configs": [{"name": "single", "policy": "main", "k": 1, "per_episode_success": [True, False, False],
                           "events": {"success": 1, "touched_wrong_cube": 1, "hit_obstacle": 1}},
                          {"name": "rank", "policy": "main", "k": 16, "per_episode_success": [True, True, False],
                           "events": {"success": 2, "touched_wrong_cube": 1}}]}
    good = tmp_path / "seed0.json"
    good.write_text(json.dumps(report))
    assert module.main([str(good), str(good), "--k", "16"]) == 0
    out = capsys.readouterr().out
    assert "episodes won only by rank: 2, only by single: 0; exact McNemar p = 0.5" in out
    assert ("how the episodes ended, pooled: rank K=16 success 4, touched_wrong_cube 2; single success 2, "
            "touched_wrong_cube 2, hit_obstacle 2") in out
    old = tmp_path / "old.json"  # written before eval stored per-episode outcomes
    old.write_text(json.dumps({"configs": [{"name": "single", "policy": "main", "k": 1, "successes": 1}]}))
    assert module.main([str(good), str(old)]) == 2
    assert "not an eval report with per-episode outcomes" in capsys.readouterr().err
    # --against: the same configuration in two reports on the same seeds (e.g. two world models)
    report["seeds"] = [1_000_000, 1_000_002]
    good.write_text(json.dumps(report))
    other = {"seeds": [1_000_000, 1_000_002], "configs": [
        {"name": "rank", "policy": "main", "k": 16, "per_episode_success": [False, False, True]}]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert module.main([str(good), "--against", str(tmp_path / "other.json")]) == 0
    assert "won only by the first: 2, only by the second: 1; exact McNemar p = 1" in capsys.readouterr().out
    other["seeds"] = [5, 7]  # other seeds: refused, not compared
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert module.main([str(good), "--against", str(tmp_path / "other.json")]) == 2
    assert "not a paired comparison" in capsys.readouterr().err
    assert module.main([str(good), "--against", str(old)]) == 2


def test_median_ratio_ci_covers_the_true_ratio_and_narrows_with_more_decisions() -> None:
    from wm_vla.eval.stats import median_ratio_ci

    rng = np.random.default_rng(5)
    widths = []
    for n in (20, 500):
        ros, inproc = 36.0 + rng.normal(0, 2, n), 30.0 + rng.normal(0, 2, n)  # true ratio of medians 1.2
        low, high = median_ratio_ci(ros, inproc)
        assert low < 1.2 < high and low > 1.0  # ROS is measurably slower, and by about 1.2
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert median_ratio_ci([40.0] * 5, [20.0] * 7) == (2.0, 2.0)  # no spread, no doubt
    assert median_ratio_ci(ros, inproc, seed=3) == median_ratio_ci(ros, inproc, seed=3)


def test_median_ratio_ci_without_decisions_is_nan_and_refuses_a_bad_level() -> None:
    from wm_vla.eval.stats import median_ratio_ci

    assert all(np.isnan(median_ratio_ci([], [1.0, 2.0])))
    with pytest.raises(ValueError, match="level"):
        median_ratio_ci([1.0], [1.0], level=95)
