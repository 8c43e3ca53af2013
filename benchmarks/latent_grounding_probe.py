"""Can a ranker learn the instruction from the policy's pooled latent z, or only from its context tokens?

The world model ranks in the policy's latent z: a projection of the MEAN of the encoder's context tokens (image,
instruction, state). A ranker that avoids the wrong cube must know which cube the instruction names. This probe
trains two small rankers on the same hindsight-relabelled candidate labels (`wm-vla sim label-candidates`: each
decision judged for every colour), with the same listwise loss on the candidates' true outcome order:

    pooled: MLP(z, chunk)                              (what the world model sees today)
    tokens: MLP(attention-pool(context tokens), chunk) (two cross-attention layers with learned queries)
    blind:  MLP(z, chunk) but z always encoded with the decision's own instruction, whichever one is being ranked
            (the control: what a ranker gets right on the relabelled instructions without reading them)
    pooled+colour: MLP(z, one-hot of the instruction's colour, chunk) (is the scene in z, and only the word weak?)

and reports, on held-out decisions (all their instructions held out together), how often each one's pick has the
best true outcome, for the decision's own instruction and for the relabelled ones, against the policy's first
sample. A ranker that reads the instruction beats `blind` on the relabelled instructions; if `tokens` clearly beats
`pooled` there, the information it needs is in the tokens but averaged away in z.

    python benchmarks/latent_grounding_probe.py --policy outputs/flare_seed1/policy \\
        --candidates outputs/hindsight/seed1_candidates --out outputs/hindsight/grounding_probe.json

With `--dataset` (a `wm-vla sim collect` folder with hindsight labels; many more layouts than label folders) it
asks the plainer question on successful recorded episodes: every frame is encoded under each colour's instruction,
each encoding is scored with the recorded chunk, and the probe must pick the colour the motion serves (chance 1/3,
held-out episodes). `pooled` sees z, `tokens` the context tokens, `pooled+colour` z plus the colour as a one-hot.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from wm_vla.models.checkpoint import load_checkpoint
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.sim.tasks import ARM_COLOURS
from wm_vla.training.candidate_labels import CandidateSet, concat_candidate_sets, load_candidate_set
from wm_vla.training.datasets import Windows, load_frames


def colour_index(instruction: str) -> int:
    """Which of the arm's colours the instruction names."""
    words = set(re.findall(r"[a-z]+", instruction.lower()))
    found = [i for i, c in enumerate(ARM_COLOURS) if c in words]
    if len(found) != 1:
        raise SystemExit(f"instruction {instruction!r} does not name exactly one of {', '.join(ARM_COLOURS)}")
    return found[0]


def truth_scores(c: CandidateSet) -> torch.Tensor:
    """The oracle order of each decision's candidates: failure (-1) < progress in [0, 1) < success (1)."""
    return torch.where(c.failure.bool(), -1.0, torch.where(c.success.bool(), 1.0, c.progress))


@torch.no_grad()
def encode(policy: FlarePolicy, c: CandidateSet, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ctx, mask, z = [], [], []
    for i in range(0, len(c), batch):
        sl = slice(i, i + batch)
        out = policy.encode(ObsBatch(c.images[sl].float() / 255.0, c.state[sl], c.instructions[sl]))
        ctx.append(out[0]), mask.append(out[1]), z.append(out[2])
    return torch.cat(ctx), torch.cat(mask), torch.cat(z)


class Ranker(nn.Module):
    """Scores (B, K) candidates from an observation summary (pooled z, or attention over the context tokens)."""

    def __init__(self, dim: int, latent_dim: int, chunk_dim: int, tokens: bool, width: int = 256,
                 extra: int = 0) -> None:
        super().__init__()
        self.tokens = tokens
        if tokens:
            self.queries = nn.Parameter(torch.randn(4, dim) * 0.02)
            self.attn = nn.ModuleList(nn.MultiheadAttention(dim, 4, batch_first=True) for _ in range(2))
            self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
            obs_dim = 4 * dim
        else:
            obs_dim = latent_dim + extra
        self.mlp = nn.Sequential(nn.Linear(obs_dim + chunk_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 1))

    def summary(self, z: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            return z
        q = self.queries.expand(ctx.shape[0], -1, -1)
        for attn, norm in zip(self.attn, self.norms):
            q = q + attn(norm(q), ctx, ctx, key_padding_mask=~mask, need_weights=False)[0]
        return q.flatten(1)

    def forward(self, z: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        s = self.summary(z, ctx, mask)  # (B, obs_dim), once per decision
        k = chunks.shape[1]
        return self.mlp(torch.cat([s[:, None].expand(-1, k, -1), chunks.flatten(2)], dim=2))[..., 0]


def top1(scores: torch.Tensor, truth: torch.Tensor) -> float:
    best = truth.max(1).values
    return float((truth.gather(1, scores.argmax(1)[:, None])[:, 0] >= best - 1e-6).float().mean())


def evaluate(model: Ranker, blind: bool, rows: torch.Tensor, z: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
             chunks: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of `rows`' decisions for their own instruction, and for the relabelled ones (with their truth)."""
    own = model(z[rows, 0], ctx[rows, 0], mask[rows, 0], chunks[rows])
    copies = range(1, truth.shape[1])
    alt = torch.cat([model(z[rows, 0 if blind else a], ctx[rows, a], mask[rows, a], chunks[rows]) for a in copies])
    return own, alt, torch.cat([truth[rows, a] for a in copies])


@torch.no_grad()
def encode_frames_per_colour(policy: FlarePolicy, dataset: str, frames: int, seed: int
                             ) -> tuple[torch.Tensor, ...]:
    """(ctx, mask, z) under each colour's instruction (N, colours, ...), the chunks (N, 1, H, A), the colour index of
    each encoding (N, colours), the own colour's position (N,), and each frame's episode (N,); successful episodes."""
    store = load_frames(dataset, policy.cfg.image_size, policy.cfg.cameras, progress=False)
    if store.relabel_tasks is None:
        raise SystemExit(f"{dataset}: no hindsight labels (collect it with `wm-vla sim collect` without --no-hindsight)")
    windows = Windows(store, policy.cfg.horizon)
    gen = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(store.episode_success).flatten()
    idx = pool[torch.randperm(len(pool), generator=gen)[:frames]].sort().values
    texts = [[store.tasks[int(i)], *store.relabel_tasks[int(i)]] for i in idx]
    order = torch.stack([torch.randperm(len(texts[0]), generator=gen) for _ in idx])  # own colour at a random place
    texts = [[t[int(j)] for j in o] for t, o in zip(texts, order)]
    enc = []
    for c in range(len(texts[0])):
        parts = []
        for i in range(0, len(idx), 128):
            obs = windows.obs(idx[i:i + 128])
            parts.append(policy.encode(ObsBatch(obs.images, obs.state, [t[c] for t in texts[i:i + 128]])))
        enc.append(tuple(torch.cat([p[j] for p in parts]) for j in range(3)))
    ctx, mask, z = (torch.stack([e[j] for e in enc], 1) for j in range(3))
    colour = torch.tensor([[colour_index(x) for x in t] for t in texts])
    chunks = policy.norm_action(windows.chunk(idx)[0])[:, None]
    return ctx, mask, z, chunks, colour, torch.argmin(order, dim=1), store.episode_end[idx]


def dataset_probe(policy: FlarePolicy, dataset: str, steps: int, seed: int, frames: int) -> dict[str, object]:
    """Which colour does the recorded motion serve? Accuracy of each probe on held-out episodes (chance 1/n)."""
    ctx, mask, z, chunks, colour, own, episode = encode_frames_per_colour(policy, dataset, frames, seed)
    n, colours = z.shape[:2]
    episodes = episode.unique()
    held_eps = episodes[torch.randperm(len(episodes), generator=torch.Generator().manual_seed(seed))[:max(1, len(episodes) // 5)]]
    held = torch.isin(episode, held_eps)
    train, test = torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()
    z_colour = torch.cat([z, F.one_hot(colour, len(ARM_COLOURS)).float() * 3 * float(z.std())], dim=2)
    pc = policy.cfg
    results: dict[str, dict[str, float]] = {}

    def scores(model: Ranker, z_in: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        b = len(rows)
        flat = model(z_in[rows].flatten(0, 1), ctx[rows].flatten(0, 1), mask[rows].flatten(0, 1),
                     chunks[rows].repeat_interleave(colours, 0))
        return flat.reshape(b, colours)

    for name in ("pooled", "pooled+colour", "tokens"):
        torch.manual_seed(seed)
        extra = len(ARM_COLOURS) if name == "pooled+colour" else 0
        model = Ranker(pc.dim, pc.latent_dim, pc.horizon * pc.action_dim, tokens=name == "tokens", extra=extra)
        z_in = z_colour if extra else z
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        for _ in tqdm(range(steps), desc=f"train {name}", unit="step"):
            rows = train[torch.randint(len(train), (64,))]
            loss = F.cross_entropy(scores(model, z_in, rows), own[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            results[name] = {split: float((scores(model, z_in, rows).argmax(1) == own[rows]).float().mean())
                             for split, rows in (("heldout", test), ("training", train))}
    return {"policy": "", "dataset": dataset, "frames": n, "heldout_frames": len(test), "colours": colours,
            "chance": 1.0 / colours, "steps": steps, "seed": seed, "accuracy": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--candidates", action="append", default=[],
                    help="repeatable: label folders written with hindsight relabelling")
    ap.add_argument("--dataset", default=None, help="instead: a `wm-vla sim collect` folder with hindsight labels")
    ap.add_argument("--frames", type=int, default=4000, help="with --dataset: frames drawn from successful episodes")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    policy = load_checkpoint(Path(args.policy), expect="policy")[0]
    assert isinstance(policy, FlarePolicy)
    pc = policy.cfg
    if args.dataset:
        report = dataset_probe(policy, args.dataset, args.steps, args.seed, args.frames) | {"policy": args.policy}
        for name, acc in report["accuracy"].items():  # type: ignore[attr-defined]
            print(f"{name:14s} which colour the recorded motion serves, {report['colours']} colours (chance "
                  f"{report['chance']:.0%}): held-out episodes {acc['heldout']:.0%}, training {acc['training']:.0%}")
        write_report(args.out, report)
        return 0
    if not args.candidates:
        raise SystemExit("give --candidates (label folders) or --dataset")
    cands = concat_candidate_sets([load_candidate_set(path, pc.cameras, pc.image_size, pc.horizon, pc.action_dim,
                                                      pc.state_dim) for path in args.candidates])
    copies = [cands, *cands.hindsight()]
    if len(copies) == 1:
        raise SystemExit(f"{', '.join(args.candidates)}: no hindsight labels (in every folder); label again without "
                         "--no-hindsight")
    n, k = len(cands), cands.k
    enc = [encode(policy, c) for c in tqdm(copies, desc="encode", unit="instruction")]
    ctx, mask, z = (torch.stack([e[i] for e in enc], 1) for i in range(3))  # (N, copies, ...)
    truth = torch.stack([truth_scores(c) for c in copies], 1)                 # (N, copies, K)
    chunks = policy.norm_action(cands.chunks)                                 # (N, K, H, A)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))  # the same split for every policy
    cut = max(1, n // 10)
    held, train = perm[:cut], (perm[cut:] if n > cut else perm)
    results: dict[str, dict[str, float]] = {}
    always_first = torch.arange(k, 0, -1).float().expand(len(held), k)  # scores that pick candidate 0
    results["first_sample"] = {"own_instruction": top1(always_first, truth[held, 0]),
                               "relabelled": top1(always_first.repeat(len(copies) - 1, 1),
                                                  truth[held, 1:].transpose(0, 1).flatten(0, 1))}
    colour = torch.tensor([[colour_index(t) for t in texts] for texts in zip(*(c.instructions for c in copies))])
    z_colour = torch.cat([z, F.one_hot(colour, len(ARM_COLOURS)).float() * 3 * float(z.std())], dim=2)
    for name in ("blind", "pooled", "pooled+colour", "tokens"):
        torch.manual_seed(args.seed)
        extra = len(ARM_COLOURS) if name == "pooled+colour" else 0
        model = Ranker(pc.dim, pc.latent_dim, pc.horizon * pc.action_dim, tokens=name == "tokens", extra=extra)
        z_in = z_colour if extra else z
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        t0 = time.perf_counter()
        for _ in tqdm(range(args.steps), desc=f"train {name}", unit="step"):
            d = train[torch.randint(len(train), (32,))]
            c = torch.randint(len(copies), (32,))
            zc = z_in[d, 0] if name == "blind" else z_in[d, c]
            scores = model(zc, ctx[d, c], mask[d, c], chunks[d])
            loss = F.kl_div(F.log_softmax(scores / 0.1, 1), F.softmax(truth[d, c] / 0.1, 1), reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            own, alt, alt_truth = evaluate(model, name == "blind", held, z_in, ctx, mask, chunks, truth)
            _, fit, fit_truth = evaluate(model, name == "blind", train, z_in, ctx, mask, chunks, truth)
        results[name] = {"own_instruction": top1(own, truth[held, 0]), "relabelled": top1(alt, alt_truth),
                         "relabelled_training_decisions": top1(fit, fit_truth),
                         "train_seconds": round(time.perf_counter() - t0, 1)}
    report = {"policy": args.policy, "candidates": args.candidates, "decisions": n, "heldout_decisions": len(held),
              "instructions_per_decision": len(copies), "k": k, "steps": args.steps, "seed": args.seed,
              "top1_best_true_outcome": results}
    for name, r in results.items():
        fit = f"; training decisions, relabelled {r['relabelled_training_decisions']:.0%}" if name != "first_sample" else ""
        print(f"{name:14s} held-out pick is the best true outcome: own instruction {r['own_instruction']:.0%}, "
              f"relabelled instructions {r['relabelled']:.0%}{fit}")
    write_report(args.out, report)
    return 0


def write_report(out: str | None, report: dict[str, object]) -> None:
    """Write the report as JSON to `out` (nothing without it)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
