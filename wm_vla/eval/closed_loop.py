"""`wm-vla eval sim`: closed-loop success of single-sample policy vs GPC-RANK(K) vs oracle ranking, on held-out seeds.

Every configuration runs the same seeds with the same sampling noise: candidate 0 of K is exactly the
single-sample policy's chunk, so differences come from the choice alone. The oracle rolls every candidate out
in a copy of the true simulator state and picks the best true outcome (the upper bound for any ranker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from wm_vla.eval.plots import Bar, write_json_and_bars
from wm_vla.eval.stats import paired, wilson
from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint, load_world_models
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.preprocess import resize_uint8
from wm_vla.runtime.errors import RankerError
from wm_vla.runtime.ranker import DEFAULT_SWITCH_MARGIN, GpcRanker, KinematicPenalty, RankerConfig
from wm_vla.sim.registry import make_world
from wm_vla.sim.tasks import Task, check_families, families_in_vocab
from wm_vla.sim.world import Observation, SimWorld, StepResult

HELDOUT_SEED = 1_000_000  # training collections use small seeds; evaluation never overlaps them


def obs_batch(obs: Observation, cameras: tuple[str, ...], image_size: int) -> ObsBatch:
    """One sim observation -> a model batch of one (images resized to the policy's input size)."""
    imgs = resize_uint8(torch.stack([torch.from_numpy(obs.images[c]).permute(2, 0, 1) for c in cameras]), image_size)
    return ObsBatch(imgs[None].float() / 255.0, torch.from_numpy(obs.state).float()[None], [obs.instruction])


@dataclass
class CandidateOutcomes:
    """True outcomes of K candidates' executed parts, each rolled out from the same simulator state."""

    success: np.ndarray    # (K,) bool: the task succeeded within the executed part
    failure: np.ndarray    # (K,) bool: the episode failed within it
    progress: np.ndarray   # (K,) the world's task progress in [0, 1] after it
    # hindsight labels: the same executed parts judged as if each of `relabel`'s tasks had been asked, (K, A)
    relabel_success: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    relabel_failure: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    relabel_progress: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def scores(self) -> np.ndarray:
        """The oracle's ranking score: success > any progress > failure."""
        return np.where(self.success, 2.0, np.where(self.failure, -1.0, self.progress))


def candidate_outcomes(world: SimWorld, chunks: np.ndarray, exec_horizon: int,
                       follow: Callable[[Observation], np.ndarray] | None = None,
                       follow_decisions: int = 0, relabel: Sequence[Task] = ()) -> CandidateOutcomes:
    """Roll each candidate's executed part out from the current true state; the world is restored after.

    With `follow`, each candidate is then continued for `follow_decisions` more decisions by `follow` (e.g. the
    single-sample policy), so that outcomes that come after the chunk (a collision on the way) count too.
    With `relabel`, the executed part (not the follow-up, which pursues the actual task) is also judged as if
    each of those tasks had been asked: the first step that ends it decides, else its progress after the part.
    """
    start = world.get_state()
    success, failure, progress = [], [], []
    alt = np.zeros((len(chunks), len(relabel), 3), dtype=np.float32)  # (success, failure, progress)
    with world.rendering(follow is not None and follow_decisions > 0):
        for i, chunk in enumerate(chunks):
            world.set_state(start)
            result = _execute(world, chunk[:exec_horizon], relabel, alt[i])
            for _ in range(follow_decisions if follow is not None else 0):
                if result.done:
                    break
                assert follow is not None
                result = _execute(world, follow(result.observation)[:exec_horizon])
            success.append(result.success)
            failure.append(result.failure)
            progress.append(world.progress())
    world.set_state(start)
    return CandidateOutcomes(np.array(success), np.array(failure), np.array(progress, dtype=np.float32),
                             alt[..., 0] > 0.5, alt[..., 1] > 0.5, alt[..., 2])


def _execute(world: SimWorld, actions: np.ndarray, relabel: Sequence[Task] = (),
             relabelled: np.ndarray | None = None) -> StepResult:
    """Step through `actions` until the episode ends; fill `relabelled` (A, 3) with each relabel task's outcome."""
    result = None
    ended = np.zeros(len(relabel), dtype=bool)
    for action in actions:
        result = world.step(action)
        for a, task in enumerate(relabel):
            if not ended[a]:
                ok, failed, prog = world.judge_as(task)
                assert relabelled is not None
                relabelled[a] = (ok, failed, prog)
                ended[a] = ok or failed
        if result.done:
            break
    assert result is not None
    return result


def policy_follower(policy: FlarePolicy, seed: int = 0) -> Callable[[Observation], np.ndarray]:
    """The single-sample policy as a `follow` function (fixed noise seed: the same observation, the same chunk)."""
    def follow(obs: Observation) -> np.ndarray:
        batch = obs_batch(obs, policy.cfg.cameras, policy.cfg.image_size)
        return policy.sample(batch, 1, generator=torch.Generator().manual_seed(seed)).actions[0].numpy()
    return follow


def oracle_choice(world: SimWorld, chunks: np.ndarray, exec_horizon: int,
                  follow: Callable[[Observation], np.ndarray] | None = None, follow_decisions: int = 0) -> int:
    """The candidate with the best true outcome (the upper bound of any ranker)."""
    return int(np.argmax(candidate_outcomes(world, chunks, exec_horizon, follow, follow_decisions).scores()))


@torch.no_grad()
def wm_latent(encoder: FlarePolicy, obs: Observation) -> torch.Tensor:
    """The observation latent z of `encoder` (a policy whose encoder the world models were trained in)."""
    return encoder.encode(obs_batch(obs, encoder.cfg.cameras, encoder.cfg.image_size))[2][0]


@dataclass
class EpisodeOutcome:
    success: bool
    event: str
    decision_ms: list[float] = field(default_factory=list)
    chosen_nonzero: int = 0
    shadow_agree: int = 0      # decisions where the shadow ranker (e.g. the teacher) picked the same candidate
    shadow_total: int = 0
    # per disagreement: (kind, the shadow's score of its own pick minus its score of the ranker's pick); kinds:
    # "switched" (the ranker switched, the shadow kept the first sample), "kept" (the reverse), "other" (both
    # switched, to different candidates)
    shadow_misses: list[tuple[str, float]] = field(default_factory=list)


def run_episode(world: SimWorld, policy: FlarePolicy, mode: str, k: int, seed: int, ranker: GpcRanker | None,
                on_step: Callable[[Observation, np.ndarray, StepResult], None] | None = None,
                family: str | tuple[str, ...] | None = None,
                on_decision: Callable[[Observation, np.ndarray, int], None] | None = None,
                shadow: GpcRanker | None = None, oracle_follow: int = 0,
                wm_encoder: FlarePolicy | None = None) -> EpisodeOutcome:
    """One closed-loop episode. `mode`: single | rank | oracle | random (a random candidate, for data collection).

    `on_step(obs, action, result)` sees every executed action (e.g. to record the episode); `on_decision(obs,
    chunks, chosen)` sees every decision before it is executed. `family` restricts the task families drawn.
    `shadow` ranks the same candidates alongside (not timed, not executed) to measure agreement with `ranker`.
    `oracle_follow` > 0 lets the oracle follow each candidate with the single-sample policy for that many decisions.
    `wm_encoder`: the policy whose encoder gives the world models their latent (default: the acting policy's).
    """
    follower = policy_follower(policy, seed) if oracle_follow > 0 else None
    obs = world.reset(seed, family=family)
    gen = torch.Generator().manual_seed(seed)
    pick_rng = np.random.default_rng([seed, 7])
    outcome = EpisodeOutcome(False, "")
    exec_h = policy.cfg.exec_horizon
    while True:
        t0 = time.perf_counter()
        sample = policy.sample(obs_batch(obs, policy.cfg.cameras, policy.cfg.image_size), k, generator=gen)
        chunks = sample.actions
        if mode == "rank" and k > 1:
            assert ranker is not None
            z = sample.obs_latent if wm_encoder is None else wm_latent(wm_encoder, obs)
            chosen = ranker.rank(z, chunks).chosen
            if shadow is not None:
                t_shadow = time.perf_counter()
                seen = shadow.rank(z, chunks)
                outcome.shadow_agree += int(seen.chosen == chosen)
                outcome.shadow_total += 1
                if seen.chosen != chosen:
                    kind = "switched" if seen.chosen == 0 else "kept" if chosen == 0 else "other"
                    outcome.shadow_misses.append((kind, float(seen.scores[seen.chosen] - seen.scores[chosen])))
                t0 += time.perf_counter() - t_shadow
        elif mode == "oracle" and k > 1:
            chosen = oracle_choice(world, chunks.numpy(), exec_h, follower, oracle_follow)
        elif mode == "random":
            chosen = int(pick_rng.integers(k))
        else:
            chosen = 0
        outcome.decision_ms.append(1e3 * (time.perf_counter() - t0))
        if on_decision is not None:
            on_decision(obs, chunks.numpy(), chosen)
        outcome.chosen_nonzero += int(chosen != 0)
        for action in chunks[chosen, :exec_h].numpy():
            result = world.step(action)
            if on_step is not None:
                on_step(obs, action, result)
            if result.done:
                outcome.success, outcome.event = result.success, result.event or ""
                return outcome
            obs = result.observation


@dataclass
class EvalConfig:
    policy: str
    wm: str | list[str] | None = None       # several: their ensemble (mean prediction) ranks
    world: str = "arm"
    episodes: int = 100
    seed: int = HELDOUT_SEED
    ks: tuple[int, ...] = (4, 16, 64)
    oracle_k: int = 16
    ablation_policy: str | None = None   # e.g. the lambda = 0 policy, evaluated single-sample
    out: str | None = None
    progress: bool = True
    jobs: int = 1                        # configurations evaluated in parallel processes (one torch thread each)
    exec_horizon: int | None = None      # override the policy's execution horizon (actions run per decision)
    denoise_steps: int | None = None     # override the policy's Euler steps
    switch_margin: float = DEFAULT_SWITCH_MARGIN  # ranker keeps candidate 0 unless another scores this much higher
    disagreement_weight: float = 0.0     # ensemble --wm: score minus this times the members' spread
    oracle_follow: int = 0               # oracle follows each candidate with the policy for N more decisions
    teacher: str | list[str] | None = None  # shadow-rank with this (teacher) model: top-1 agreement on the real decisions
    tasks: tuple[str, ...] | None = None  # task families drawn; None: those the policy was trained on (its vocabulary)
    wm_encoder: str | None = None        # policy whose encoder gives the world models their latent; None: the acting one


def _row(name: str, k: int, policy_label: str, outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    rate = wilson(sum(o.success for o in outcomes), len(outcomes))
    ms = [m for o in outcomes for m in o.decision_ms]
    events: dict[str, int] = {}
    for o in outcomes:
        events[o.event] = events.get(o.event, 0) + 1
    return {"name": name, "k": k, "policy": policy_label, "episodes": len(outcomes), "successes": rate.successes,
            "success_rate": rate.value, "ci95": [rate.low, rate.high],
            "decision_ms_p50": float(np.median(ms)) if ms else float("nan"),
            "decision_ms_p99": float(np.percentile(ms, 99)) if ms else float("nan"),
            "switched_decisions": int(sum(o.chosen_nonzero for o in outcomes)), "events": events,
            "per_episode_success": [bool(o.success) for o in outcomes],  # in seed order: paired comparisons
            **(shadow_summary(outcomes) if any(o.shadow_total for o in outcomes) else {})}


def shadow_summary(outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
    """Top-1 agreement with the shadow ranker over the real decisions, and what its disagreements were: which way
    (`EpisodeOutcome.shadow_misses` kinds) and how much of its own score the shadow would lose with the ranker's pick
    (its regret: small where its best candidates were near-ties)."""
    total = sum(o.shadow_total for o in outcomes)
    misses = [m for o in outcomes for m in o.shadow_misses]
    regret = np.array([r for _, r in misses])
    kinds = {kind: sum(1 for k, _ in misses if k == kind) for kind in ("switched", "kept", "other")}
    return {"teacher_agreement": sum(o.shadow_agree for o in outcomes) / max(1, total),
            "teacher_agreement_decisions": total,
            "teacher_disagreements": {**kinds,
                                      "regret_p50": float(np.median(regret)) if len(regret) else float("nan"),
                                      "regret_below_0.01": int((regret < 0.01).sum()),
                                      "regret_below_0.05": int((regret < 0.05).sum())}}


def load_policy(path: str, exec_horizon: int | None = None, denoise_steps: int | None = None) -> FlarePolicy:
    """A policy checkpoint with optional inference-time overrides (validated like the stored config)."""
    policy, _, _ = load_checkpoint(Path(path), expect="policy")
    assert isinstance(policy, FlarePolicy)
    if exec_horizon is not None:
        policy.cfg.exec_horizon = exec_horizon
    if denoise_steps is not None:
        policy.cfg.denoise_steps = denoise_steps
    policy.cfg.validate()
    return policy


def _plan(cfg: EvalConfig) -> list[tuple[str, int, str]]:
    plan = [("single", 1, "main")]
    if cfg.wm is not None:
        plan += [("rank", k, "main") for k in cfg.ks]
    if cfg.oracle_k > 1:
        plan.append(("oracle", cfg.oracle_k, "main"))
    if cfg.ablation_policy:  # single-sample only: the world model lives in the main policy's latent space
        plan.append(("single", 1, "ablation"))
    return plan


def build_ranker(path: str | list[str], policy: FlarePolicy, world: SimWorld, switch_margin: float,
            disagreement_weight: float = 0.0) -> GpcRanker:
    wm, _ = load_world_models(path)
    return GpcRanker(wm, policy.action_mean, policy.action_std, KinematicPenalty(world.profile),
                     RankerConfig(switch_margin=switch_margin, disagreement_weight=disagreement_weight))


def _run_config(cfg: EvalConfig, name: str, k: int, label: str, threads: int | None = None) -> dict[str, Any]:
    """Evaluate one configuration over all seeds (runs in a worker process when jobs > 1)."""
    if threads:
        torch.set_num_threads(threads)
    policy = load_policy(cfg.ablation_policy if label == "ablation" else cfg.policy, cfg.exec_horizon, cfg.denoise_steps)
    ranker = shadow = None
    world = make_world(cfg.world)
    encoder = load_policy(cfg.wm_encoder) if cfg.wm_encoder and name == "rank" else None
    if cfg.wm is not None and name == "rank":
        latent_policy = encoder or policy  # the world models normalise chunks as their latent's policy does
        ranker = build_ranker(cfg.wm, latent_policy, world, cfg.switch_margin, cfg.disagreement_weight)
        if cfg.teacher is not None:
            shadow = build_ranker(cfg.teacher, latent_policy, world, cfg.switch_margin, cfg.disagreement_weight)
    seeds = range(cfg.seed, cfg.seed + cfg.episodes)
    tasks = eval_tasks_for(cfg.world, cfg.tasks, policy)
    outcomes = [run_episode(world, policy, name, k, s, ranker, family=tasks, shadow=shadow, oracle_follow=cfg.oracle_follow,
                            wm_encoder=encoder)
                for s in tqdm(seeds, desc=f"{name} K={k} ({label})", unit="ep", disable=not cfg.progress)]
    world.close()
    return _row(name, k, label, outcomes)


def eval_tasks_for(world: str, tasks: tuple[str, ...] | None, policy: FlarePolicy) -> tuple[str, ...]:
    """The task families to run: as given, else those in the policy's training instructions (its vocabulary)."""
    if tasks is not None:
        return check_families(world, tasks)
    return families_in_vocab(world, policy.cfg.vocab) or check_families(world, None)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    plan = _plan(cfg)
    main_policy = load_policy(cfg.policy)
    if cfg.disagreement_weight and not isinstance(cfg.wm, list):
        raise RankerError("disagreement_weight needs an ensemble: give several world models (--wm A B ...)")
    encoder = load_policy(cfg.wm_encoder) if cfg.wm_encoder else main_policy
    for models in (cfg.wm, cfg.teacher):  # a missing or mismatched world model fails now, not after an eval
        if models is not None:
            check_world_model_encoder(models, cfg.wm_encoder or cfg.policy)
            wm, _ = load_world_models(models)
            if wm.cfg.latent_dim != encoder.cfg.latent_dim:
                raise RankerError(f"world model {models} works in a {wm.cfg.latent_dim}-d latent but the encoder of "
                                  f"{cfg.wm_encoder or cfg.policy} gives {encoder.cfg.latent_dim}-d: give the policy it "
                                  "was trained with (--policy of `wm-vla train world-model`) as --wm-encoder")
    cfg = EvalConfig(**{**cfg.__dict__, "tasks": eval_tasks_for(cfg.world, cfg.tasks, main_policy)})
    if cfg.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        cost = {"single": 1, "rank": 2, "oracle": 4}  # rough cost order: start the slow ones first
        order = sorted(range(len(plan)), key=lambda i: -cost[plan[i][0]] * max(1, plan[i][1]) ** 0.5)
        quiet = EvalConfig(**{**cfg.__dict__, "progress": False})
        with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=get_context("spawn")) as pool:
            futures = {i: pool.submit(_run_config, quiet, *plan[i], 1) for i in order}
            rows = []
            for i in range(len(plan)):
                rows.append(futures[i].result())
                if cfg.progress:
                    r = rows[-1]
                    print(f"[eval] {r['name']} K={r['k']} ({r['policy']}): {r['successes']}/{r['episodes']}", flush=True)
    else:
        rows = [_run_config(cfg, *item) for item in plan]
    policy_cfg = main_policy.cfg
    report = {"world": cfg.world, "tasks": list(cfg.tasks or ()), "policy": cfg.policy, "wm": cfg.wm, "ablation_policy": cfg.ablation_policy,
              "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "policy_flare_weight": policy_cfg.flare_weight,
              "exec_horizon": cfg.exec_horizon or policy_cfg.exec_horizon,
              "denoise_steps": cfg.denoise_steps or policy_cfg.denoise_steps, "switch_margin": cfg.switch_margin,
              "disagreement_weight": cfg.disagreement_weight,
              "oracle_follow": cfg.oracle_follow, "teacher": cfg.teacher, "wm_encoder": cfg.wm_encoder, "configs": rows,
              "paired_vs_single": paired_vs_single(rows)}
    if cfg.out:
        write_eval_report(report, Path(cfg.out))
    return report


COLORS = {"single": "#9d9d9d", "rank": "#4c78a8", "oracle": "#54a24b"}


def paired_vs_single(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each rank/oracle configuration against the main single sample on the same seeds (exact McNemar)."""
    single = next((r for r in rows if r["name"] == "single" and r["policy"] == "main"), None)
    if single is None:
        return []
    return [{"config": r["name"], "k": r["k"], **paired(r["per_episode_success"], single["per_episode_success"]).to_dict()}
            for r in rows if r["name"] in ("rank", "oracle")]


def write_eval_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """`<out>.json` + `<out>.png`: success per configuration with 95% CIs and decision p50."""
    bars = [Bar(f"{r['name']}\nK={r['k']}" + ("\n(ablation)" if r["policy"] == "ablation" else ""), r["successes"],
                r["episodes"], r["ci95"][0], r["ci95"][1], f"{r['decision_ms_p50']:.0f} ms", COLORS[r["name"]])
            for r in report["configs"]]
    tasks = f" ({'/'.join(report['tasks'])})" if report.get("tasks") else ""
    title = f"{report['world']}{tasks}: closed-loop success, seeds {report['seeds'][0]}-{report['seeds'][1]}"
    return write_json_and_bars(report, bars, title, Path(out))
