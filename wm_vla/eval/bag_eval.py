"""`wm-vla bag eval` / `bag score`: open-loop replay of a bag's decision points through policy + world model.

Per decision point: K candidates (candidate 0 = the policy's single sample) from seeded noise, GPC-RANK choice,
errors against the recorded command chunk (per joint, per horizon step, candidate 0 / chosen / best-of-K),
whether the ranker prefers candidates closer to the operator, the WM's predicted z_{t+H} for the recorded chunk
vs the realised one (policy encoder on the bag's observation at t+H), the WM's failure probability of the recorded
chunk and of the candidates (counterfactual scoring), and per-stage latency. For a recording of our own stack the
recorded seed is reused, so candidates and choice are reproduced and compared.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wm_vla.data.bags import LoadConfig, TopicMap, load_decisions, parse_ranges
from wm_vla.data.bags.decisions import BagData, DecisionPoint
from wm_vla.data.errors import BagAlignmentError, DataError
from wm_vla.robots import load_profile
from wm_vla.runtime.backends import BackendConfig, select_backend
from wm_vla.runtime.decision import Decision, DecisionPipeline
from wm_vla.runtime.errors import RuntimeErrorBase
from wm_vla.runtime.ranker import DEFAULT_SWITCH_MARGIN, KinematicPenalty, RankerConfig
from wm_vla.runtime.spec import candidate_noise

log = logging.getLogger(__name__)
NS = 1_000_000_000


@dataclass
class BagEvalConfig:
    bag: str
    policy: str
    wm: str | None
    out: str | None = None
    robot: str = "arm"
    k: int = 16
    seed: int = 0
    backend: str = "torch"
    onnx_dir: str | None = None
    topics: dict[str, str] | None = None     # overrides of the profile's topic map (name -> topic)
    every_s: float | None = None             # decision spacing; default: the policy's exec_horizon / fps
    max_age_ms: float | None = None          # default: the robot profile's max_obs_age_ms
    episodes: str | None = None              # "0:30,40:75" seconds from the bag start
    gap_s: float | None = 1.0                # split episodes where the reference camera pauses longer than this
    marker: str | None = None                # or by this marker topic
    max_decisions: int | None = None
    instruction: str | None = None
    fail_threshold: float = 0.5              # bag score: WM failure probability that flags a moment
    switch_margin: float = DEFAULT_SWITCH_MARGIN
    threads: int | None = None
    progress: bool = True
    wm_encoder: str | None = None            # the policy whose latent the world model ranks in (None: the policy's)


def _policy_config(path: str) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())["config"]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _nanmean(x: np.ndarray | list, axis: int | tuple[int, ...]) -> np.ndarray:
    """nanmean that returns NaN for all-NaN slices without a RuntimeWarning (unrecorded steps are expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(x, float), axis=axis)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class BagEvaluator:
    def __init__(self, cfg: BagEvalConfig) -> None:
        self.cfg = cfg
        pc = _policy_config(cfg.policy)
        self.profile = load_profile(cfg.robot)
        self.horizon, self.fps, self.exec_h = int(pc["horizon"]), float(pc["fps"]), int(pc["exec_horizon"])
        self.cameras = tuple(pc["cameras"])
        topics = TopicMap.from_profile(self.profile, self.cameras)
        if cfg.marker:
            topics = topics.with_overrides({"marker": cfg.marker})
        self.topics = topics.with_overrides(cfg.topics or {})
        self.load_cfg = LoadConfig(
            self.cameras, int(pc["image_size"]), tuple(self.profile.state.names), tuple(self.profile.action.names),
            self.horizon, self.fps, cfg.every_s or self.exec_h / self.fps,
            cfg.max_age_ms if cfg.max_age_ms is not None else self.profile.max_obs_age_ms,
            parse_ranges(cfg.episodes) if cfg.episodes else None, None if cfg.episodes else cfg.gap_s,
            cfg.max_decisions, cfg.instruction)
        sel = select_backend(BackendConfig(backend=cfg.backend, device="cpu", onnx_dir=cfg.onnx_dir, policy=cfg.policy,
                                           world_model=None if cfg.wm_encoder else cfg.wm, threads=cfg.threads))
        self.backend = sel.backend
        wm_backend = None
        if cfg.wm_encoder and cfg.wm:  # the world model with its own encoder (export made on demand, cached)
            from wm_vla.runtime.loading import open_backend

            wm_backend = open_backend(cfg.backend, cfg.wm_encoder, cfg.wm, None, "cpu", cfg.threads).backend
        self.wm = wm_backend or self.backend  # encodes the future frames and rolls chunks out in its latent
        self.pipeline = DecisionPipeline(self.backend, KinematicPenalty(self.profile),
                                         RankerConfig(switch_margin=cfg.switch_margin), wm_backend)

    def _seed(self, dp: DecisionPoint) -> int:
        return dp.seed if dp.seed is not None else self.cfg.seed * 1_000_003 + dp.index

    def _obs(self, images: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images[None].astype(np.float32) / 255.0, state[None].astype(np.float32)

    def decide(self, dp: DecisionPoint) -> tuple[Decision, dict[str, Any]]:
        k = dp.recorded_candidates.shape[0] if dp.recorded_candidates is not None else self.cfg.k
        noise = candidate_noise(self.horizon, len(self.profile.action.names), k, self._seed(dp))
        images, state = self._obs(dp.images, dp.state)
        d = self.pipeline.decide(images, state, dp.instruction, noise)
        row: dict[str, Any] = {"index": dp.index, "episode": dp.episode, "t_s": dp.stamp_ns / NS, "seed": self._seed(dp),
                               "instruction": dp.instruction, "chosen": d.chosen, "stage_ms": d.stage_ms}
        if d.ranking is not None:
            row.update(scores=d.ranking.scores.tolist(), progress=d.ranking.progress.tolist(),
                       failure_prob=d.ranking.failure_prob.tolist())
        return d, row

    def analyse(self, dp: DecisionPoint, d: Decision, row: dict[str, Any]) -> None:
        """Operator comparison, ranking analysis, realised-future cosine and recorded-chunk WM score into `row`."""
        rec = dp.recorded
        have = ~np.isnan(rec)
        if have.any():
            err = np.where(have[None], np.abs(d.actions - np.nan_to_num(rec)[None]), np.nan)   # (K, H, A)
            per_cand = _nanmean(err, (1, 2))
            best = int(np.nanargmin(per_cand))
            row.update(covered=float(have.mean()), err_cand0=float(per_cand[0]), err_chosen=float(per_cand[d.chosen]),
                       err_best=float(per_cand[best]), err_mean=float(np.nanmean(per_cand)), best=best,
                       err_joint_chosen=_nanmean(err[d.chosen], 0).tolist(),
                       err_step_chosen=_nanmean(err[d.chosen], 1).tolist(),
                       err_step_best=_nanmean(err[best], 1).tolist(), err_step_cand0=_nanmean(err[0], 1).tolist())
            if d.ranking is not None and len(per_cand) > 1:
                row["rank_corr"] = _spearman(d.ranking.scores, -per_cand)
                row["chosen_err_rank"] = float(np.sum(per_cand < per_cand[d.chosen]) / (len(per_cand) - 1))
        if not self.wm.spec.has_world_model:
            return
        z = d.rank_latent
        if have.any():
            filled = self._hold(rec, have, dp.state)
            if filled is not None:
                roll = self.wm.rollout(z, filled[None].astype(np.float32))
                row.update(recorded_progress=float(roll.progress[0]), recorded_failure_prob=float(roll.failure_prob[0]))
                if dp.future_images is not None and dp.future_state is not None and np.isfinite(dp.future_state).all():
                    fut = self.wm.encode(*self._obs(dp.future_images, dp.future_state), dp.instruction).obs_latent
                    row["cos_wm_recorded"] = _cos(roll.next_latent[0], fut)
                    chosen = self.wm.rollout(z, d.actions[d.chosen][None]).next_latent[0]
                    row["cos_wm_chosen"] = _cos(chosen, fut)
                    row["cos_static"] = _cos(z, fut)   # baseline: "nothing changes"

    def _hold(self, rec: np.ndarray, have: np.ndarray, state: np.ndarray) -> np.ndarray | None:
        """Unrecorded dims: position control holds the current value, velocity control stops (zero)."""
        act, st = self.profile.action, list(self.profile.state.names)
        if act.kind != "joint_position":
            return np.where(have, rec, 0.0)
        if not all(n in st for n in act.names):
            return None
        return np.where(have, rec, state[[st.index(n) for n in act.names]][None])

    def compare_recorded(self, dp: DecisionPoint, d: Decision, row: dict[str, Any]) -> None:
        if dp.recorded_candidates is None:
            return
        row["replay_max_abs_diff"] = float(np.max(np.abs(d.actions - dp.recorded_candidates)))
        if dp.recorded_chosen is not None:
            row["replay_chosen_match"] = bool(d.chosen == dp.recorded_chosen)
            row["recorded_chosen"] = dp.recorded_chosen

    def run(self, score_only: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()
        data = load_decisions(self.cfg.bag, self.topics, self.load_cfg)
        load_s = time.perf_counter() - t0
        rows = []
        t1 = time.perf_counter()
        for dp in tqdm(data.decisions, desc="bag eval", unit="decision", disable=not self.cfg.progress):
            try:
                d, row = self.decide(dp)
                self.analyse(dp, d, row)
                self.compare_recorded(dp, d, row)
            except (RuntimeErrorBase, DataError) as exc:  # one bad observation must not end the report
                data.issues.add("decision_failed", f"decision {dp.index} at {dp.stamp_ns / NS:.3f} s: {exc}")
                continue
            rows.append(row)
        eval_s = time.perf_counter() - t1
        if not rows:
            raise BagAlignmentError(f"{self.cfg.bag}: every decision failed ({data.issues.to_dict()})")
        report = summarise(self.cfg, data, rows, load_s, eval_s, self.backend.describe())
        if self.cfg.out:
            from wm_vla.eval.bag_report import write_bag_report

            report["files"] = [str(p) for p in write_bag_report(report, Path(self.cfg.out), score_only)]
        return report


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r and r[key] == r[key]]
    return float(np.mean(vals)) if vals else None


def failure_moments(rows: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Decisions where the WM predicts failure: for the recorded chunk, the chosen candidate, or every candidate."""
    out = []
    for r in rows:
        fp = r.get("failure_prob")
        rec = r.get("recorded_failure_prob")
        flags = []
        if rec is not None and rec >= threshold:
            flags.append("recorded")
        if fp and fp[r["chosen"]] >= threshold:
            flags.append("chosen")
        if fp and min(fp) >= threshold:
            flags.append("all_candidates")
        if flags:
            out.append({"index": r["index"], "episode": r["episode"], "t_s": r["t_s"], "flags": flags,
                        "recorded_failure_prob": rec, "chosen_failure_prob": fp[r["chosen"]] if fp else None,
                        "min_candidate_failure_prob": min(fp) if fp else None})
    return out


def summarise(cfg: BagEvalConfig, data: BagData, rows: list[dict[str, Any]], load_s: float, eval_s: float,
              backend: str) -> dict[str, Any]:
    stages: dict[str, list[float]] = {}
    for r in rows:
        for name, ms in r["stage_ms"].items():
            stages.setdefault(name, []).append(ms)
    with_err = [r for r in rows if "err_chosen" in r]
    steps = {k: _nanmean([r[k] for r in with_err], 0).tolist() if with_err else []
             for k in ("err_step_cand0", "err_step_chosen", "err_step_best")}
    joints = _nanmean([r["err_joint_chosen"] for r in with_err], 0).tolist() if with_err else []
    t0 = rows[0]["t_s"] if rows else 0.0
    for r in rows:
        r["t_rel_s"] = r["t_s"] - t0
    replay = [r for r in rows if "replay_max_abs_diff" in r]
    summary = {
        "decisions": len(rows), "episodes": len(data.episodes), "with_recorded_commands": len(with_err),
        "bag_duration_s": data.duration_s, "mode": data.mode,
        "error": {"cand0": _mean(rows, "err_cand0"), "chosen": _mean(rows, "err_chosen"),
                  "best_of_k": _mean(rows, "err_best"), "mean_candidate": _mean(rows, "err_mean"),
                  "per_step": steps, "per_joint_chosen": dict(zip(data_action_names(cfg), joints))},
        "ranking": {"spearman_score_vs_closeness": _mean(rows, "rank_corr"),
                    "chosen_error_rank": _mean(rows, "chosen_err_rank"),
                    "chosen_is_closest": (float(np.mean([r["chosen"] == r["best"] for r in with_err]))
                                          if with_err else None),
                    "switched": int(sum(r["chosen"] != 0 for r in rows))},
        "world_model": {"cos_pred_recorded_vs_realised": _mean(rows, "cos_wm_recorded"),
                        "cos_pred_chosen_vs_realised": _mean(rows, "cos_wm_chosen"),
                        "cos_now_vs_realised": _mean(rows, "cos_static"),
                        "recorded_failure_prob": _mean(rows, "recorded_failure_prob")},
        "latency_ms": {k: {"p50": float(np.median(v)), "p99": float(np.percentile(v, 99))} for k, v in stages.items()},
        "throughput": {"load_s": load_s, "eval_s": eval_s,
                       "decisions_per_s": len(rows) / eval_s if eval_s > 0 else None,
                       "decisions_per_s_incl_load": len(rows) / (load_s + eval_s) if load_s + eval_s > 0 else None},
    }
    if replay:
        summary["replay"] = {"decisions": len(replay),
                             "max_abs_diff": float(max(r["replay_max_abs_diff"] for r in replay)),
                             "chosen_match": int(sum(r.get("replay_chosen_match", False) for r in replay)),
                             "with_recorded_choice": int(sum("replay_chosen_match" in r for r in replay))}
    return {"config": {k: v for k, v in asdict(cfg).items() if k != "progress"}, "backend": backend,
            "topics": data.topics, "issues": data.issues.to_dict(), "warnings": data.warnings, "summary": summary,
            "failure_moments": failure_moments(rows, cfg.fail_threshold), "decisions": rows}


def data_action_names(cfg: BagEvalConfig) -> tuple[str, ...]:
    return tuple(load_profile(cfg.robot).action.names)


def evaluate_bag(cfg: BagEvalConfig, score_only: bool = False) -> dict[str, Any]:
    return BagEvaluator(cfg).run(score_only)
