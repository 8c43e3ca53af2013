"""Live latency budget: degradation order, hysteresis and recovery of the LatencyGovernor (synthetic and real)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime_helpers import observation, tiny_models
from wm_vla.runtime.backends.ort_backend import OrtBackend
from wm_vla.runtime.decision import DecisionPipeline
from wm_vla.runtime.errors import LatencyConfigError
from wm_vla.runtime.export import export_models
from wm_vla.runtime.latency import GovernorConfig, LatencyGovernor, governor_config_from_mapping, ladder
from wm_vla.runtime.ranker import GpcRanker
from wm_vla.runtime.spec import candidate_noise

FULL_LADDER = ["K=16 +GPC-OPT", "K=8 +GPC-OPT", "K=4 +GPC-OPT", "K=4", "passthrough"]


def test_ladder_degrades_k_then_gpc_opt_then_passthrough() -> None:
    modes = ladder(GovernorConfig(budget_ms=10, k_levels=(16, 8, 4), gpc_opt=True))
    assert [m.name for m in modes] == FULL_LADDER
    assert [(m.k, m.gpc_opt, m.rank) for m in modes[-2:]] == [(4, False, True), (1, False, False)]
    assert [m.name for m in ladder(GovernorConfig(budget_ms=10, k_levels=(16, 4)))] == ["K=16", "K=4", "passthrough"]


def _feed(gov: LatencyGovernor, n: int, total_ms: float) -> None:
    for _ in range(n):
        gov.record({"encode": 1.0, "sample": 2.0, "wm_rollout": total_ms - 3.0})


def test_synthetic_overrun_walks_the_ladder_down_then_recovers_one_level_at_a_time(caplog) -> None:
    cfg = GovernorConfig(budget_ms=50, k_levels=(16, 8, 4), gpc_opt=True, window=10, min_samples=5, dwell=5,
                         recover_fraction=0.5, backoff_window=0)
    gov = LatencyGovernor(cfg)
    _feed(gov, 4, 80.0)
    assert gov.level == 0  # fewer than min_samples: not judged yet
    with caplog.at_level(logging.WARNING):
        _feed(gov, 40, 80.0)
    assert [c.new.name for c in gov.history] == FULL_LADDER[1:]
    assert all(c.direction == "degrade" and c.p99_ms == pytest.approx(80.0) for c in gov.history)
    assert [c.decision for c in gov.history] == [5, 10, 15, 20]  # one step per dwell, the window restarts each time
    assert "wm_rollout" in gov.history[0].stage_p99_ms and "degrade K=16 +GPC-OPT -> K=8 +GPC-OPT" in caplog.text
    assert not gov.mode.rank and gov.mode.k == 1
    _feed(gov, 9, 10.0)
    assert gov.level == 4  # recovery needs a full window
    _feed(gov, 40, 10.0)
    assert [c.new.name for c in gov.history[4:]] == FULL_LADDER[-2::-1]
    assert gov.level == 0 and all(c.direction == "recover" for c in gov.history[4:])
    keys = dict(gov.diagnostics())
    assert keys["mode"] == "K=16 +GPC-OPT" and keys["changes"] == "8" and "recover" in keys["last_change"]


def test_between_the_thresholds_nothing_changes() -> None:
    gov = LatencyGovernor(GovernorConfig(budget_ms=50, k_levels=(16, 4), window=10, min_samples=5, dwell=5,
                                         recover_fraction=0.5))
    _feed(gov, 5, 80.0)
    assert gov.level == 1
    _feed(gov, 100, 40.0)  # fits the budget but is above 0.5 x budget: stay degraded, do not oscillate
    assert gov.level == 1 and len(gov.history) == 1


def test_a_recovery_that_does_not_hold_doubles_the_dwell_before_the_next_attempt() -> None:
    cfg = GovernorConfig(budget_ms=50, k_levels=(16, 4), window=10, min_samples=5, dwell=10, recover_fraction=0.5,
                         backoff_window=100)
    gov = LatencyGovernor(cfg)

    def run(level_ms: dict[int, float], n: int) -> None:  # latency depends on the level: K=16 does not fit
        for _ in range(n):
            gov.record({"total": level_ms[gov.level]})

    run({0: 80.0, 1: 10.0, 2: 1.0}, 10)
    assert gov.level == 1
    run({0: 80.0, 1: 10.0, 2: 1.0}, 10)
    assert gov.level == 0  # first recovery attempt after `dwell` decisions
    run({0: 80.0, 1: 10.0, 2: 1.0}, 10)
    assert gov.level == 1  # it did not hold
    first_retry = gov.decisions
    run({0: 80.0, 1: 10.0, 2: 1.0}, 60)
    retries = [c.decision for c in gov.history if c.direction == "recover"]
    assert retries[1] - first_retry == 20  # the dwell doubled from 10 to 20
    assert all(b - a >= 20 for a, b in zip(retries, retries[1:]))


@pytest.mark.parametrize("bad", [
    {"budget_ms": 0}, {"budget_ms": float("nan")}, {"budget_ms": 10, "k_levels": [4, 16]},
    {"budget_ms": 10, "k_levels": []}, {"budget_ms": 10, "k_levels": "16"}, {"budget_ms": 10, "recover_fraction": 1.2},
    {"budget_ms": 10, "window": 5, "min_samples": 9}, {"budget_ms": 10, "k_level": [4]}, {"k_levels": [4]},
    {"budget_ms": "fast"},
])
def test_malformed_governor_settings_are_typed_errors(bad: dict) -> None:
    with pytest.raises(LatencyConfigError):
        governor_config_from_mapping(bad)


def test_malformed_stage_times_are_rejected() -> None:
    gov = LatencyGovernor(GovernorConfig(budget_ms=10))
    for bad in ({}, {"sample": -1.0}, {"sample": float("inf")}):
        with pytest.raises(LatencyConfigError):
            gov.record(bad)
    assert gov.decisions == 0


# ----- real decisions on a real onnxruntime backend, with an artificial delay injected into the WM stage -----
class _SlowWorldModel(OrtBackend):
    """The real onnxruntime backend whose world-model stage sleeps `delay_s` first (fault injection)."""

    delay_s = 0.0

    def _rollout(self, obs_latent, actions, handle):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        return super()._rollout(obs_latent, actions, handle)


def test_injected_wm_delay_degrades_in_order_and_recovers(tmp_path: Path, caplog) -> None:
    policy, wm = tiny_models()
    info = export_models(policy, tmp_path / "onnx", wm)
    backend = _SlowWorldModel(info.directory, "cpu", threads=1)
    pipe = DecisionPipeline(backend)
    ranker = GpcRanker(wm, policy.action_mean, policy.action_std)
    spec = info.spec
    images, state = observation(spec)
    noise = candidate_noise(spec.horizon, spec.action_dim, 16, seed=0)
    # thresholds far from the undelayed decision time (a few ms): the test machine's load must not decide it
    gov = LatencyGovernor(GovernorConfig(budget_ms=400, k_levels=(16, 8, 4), gpc_opt=True, window=6, min_samples=2,
                                         dwell=2, recover_fraction=0.75, backoff_window=0))
    trace: list[tuple[str, bool]] = []  # (mode, WM delayed) per decision

    def decide() -> None:
        mode = gov.mode
        d = pipe.decide(images, state, "touch the red cube", noise[: mode.k], rank=mode.rank)
        ms = {k: v for k, v in d.stage_ms.items() if k != "total"}
        if mode.gpc_opt:
            t0 = time.perf_counter()
            ranker.optimize(torch.from_numpy(d.obs_latent), torch.from_numpy(d.chunk), budget_ms=5, max_steps=2)
            ms["gpc_opt"] = 1e3 * (time.perf_counter() - t0)
        assert d.actions.shape[0] == mode.k and (d.ranking is not None) == mode.rank
        trace.append((mode.name, backend.delay_s > 0))
        gov.record(ms)

    for k in (1, 16):  # warm-up outside the governor (first-call allocations, autograd)
        pipe.decide(images, state, "touch the red cube", noise[:k])
        ranker.optimize(torch.from_numpy(pipe.decide(images, state, "", noise[:k]).obs_latent),
                        torch.from_numpy(noise[0]), budget_ms=5, max_steps=1)
    backend.delay_s = 0.8  # 2x the budget on its own: shrinking K cannot help, only passthrough skips the WM
    with caplog.at_level(logging.WARNING):
        for _ in range(60):
            decide()
            if not gov.mode.rank:
                break
    assert [c.new.name for c in gov.history] == FULL_LADDER[1:]
    assert all(c.stage_p99_ms["wm_rollout"] >= 800 for c in gov.history)
    backend.delay_s = 0.0
    for _ in range(80):
        decide()
        if gov.level == 0:
            break
    recoveries = [c for c in gov.history if c.direction == "recover"]
    assert [c.new.name for c in recoveries] == FULL_LADDER[-2::-1]
    assert all(c.p99_ms <= 0.75 * 400 for c in recoveries)
    assert sum(1 for _m, delayed in trace if delayed) == 4 * 2  # each degradation took one dwell
    assert caplog.text.count("latency governor: degrade") == 4 and caplog.text.count("latency governor: recover") == 4
    np.testing.assert_equal(gov.mode.k, 16)
