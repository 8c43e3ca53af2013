"""Export-ready torch modules: the same maths as `FlarePolicy` / `LatentWorldModel`, restructured for inference.

They share the trained weights and reproduce the reference up to float rounding (parity is tested), but:
- the N-step Euler sampler is unrolled with the noise as an input, so every backend is deterministic;
- everything that does not depend on the candidate is computed once, not K times: the flow-time conditioning
  of each step (a constant per step, precomputed here), the cross-attention keys/values of the observation
  context (once per decision, shared by all K candidates and all steps) and the state token;
- the FLARE head runs only on the last step (the reference discards the earlier ones);
- attention, adaptive pooling and the instruction lookup are written with plain MatMul/Softmax/Gather ops,
  which onnxruntime fuses well and TensorRT's ONNX parser supports.
Inputs and outputs are documented in `wm_vla.runtime.export` (GRAPH_IO).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wm_vla.models.dit import DiTBlock, timestep_embedding
from wm_vla.models.encoders import ImageEncoder, InstructionEncoder, ObservationEncoder, film_stage, instruction_vector
from wm_vla.models.flare_policy import FlarePolicy
from wm_vla.models.world_model import LatentWorldModel
from wm_vla.runtime.errors import ExportError

MASK_VALUE = -1.0e4  # additive attention mask: exp() underflows to exactly 0 in fp32, and it fits fp16


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads)."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, dh) -> (B, N, heads * dh)."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def _split_in_proj(attn: nn.MultiheadAttention) -> tuple[torch.Tensor, ...]:
    w, b = attn.in_proj_weight, attn.in_proj_bias
    d = attn.embed_dim
    return w[:d], w[d:2 * d], w[2 * d:], b[:d], b[d:2 * d], b[2 * d:]


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """nn.MultiheadAttention(x, x, x) with an optional additive key bias (B, 1, 1, N)."""
    wq, wk, wv, bq, bk, bv = _split_in_proj(attn)
    h = attn.num_heads
    q, k, v = _heads(F.linear(x, wq, bq), h), _heads(F.linear(x, wk, bk), h), _heads(F.linear(x, wv, bv), h)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + bias
    return F.linear(_merge(torch.softmax(scores, dim=-1) @ v), attn.out_proj.weight, attn.out_proj.bias)


class AdaptiveAvgPool(nn.Module):
    """AdaptiveAvgPool2d for a fixed input size, as one MatMul with the pooling weights (exact same averages)."""

    def __init__(self, in_hw: tuple[int, int], out_side: int) -> None:
        super().__init__()
        h, w = in_hw
        weights = torch.zeros(h * w, out_side * out_side)
        for oy in range(out_side):
            y0, y1 = (oy * h) // out_side, -((-(oy + 1) * h) // out_side)
            for ox in range(out_side):
                x0, x1 = (ox * w) // out_side, -((-(ox + 1) * w) // out_side)
                cell = torch.zeros(h, w)
                cell[y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
                weights[:, oy * out_side + ox] = cell.flatten()
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out*out, C) tokens."""
        return (x.flatten(2) @ self.weights).transpose(1, 2)


class ImageGraph(nn.Module):
    def __init__(self, enc: ImageEncoder, image_size: int) -> None:
        super().__init__()
        self.enc = enc
        sizes = [image_size]
        for _ in enc.stages:
            sizes.append((sizes[-1] + 1) // 2)  # 3x3 conv, stride 2, padding 1
        self.pool = AdaptiveAvgPool((sizes[-1], sizes[-1]), int(enc.pool.output_size))  # type: ignore[arg-type]
        if enc.keypoints:
            side = sizes[-2]
            lin = torch.linspace(-1, 1, side)
            ys, xs = torch.meshgrid(lin, lin, indexing="ij")
            self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], dim=-1))

    def forward(self, images: torch.Tensor, instruction: torch.Tensor | None = None) -> torch.Tensor:
        e = self.enc
        x = images * 2.0 - 1.0
        feats = []
        for i, stage in enumerate(e.stages):
            x = film_stage(stage, x, e.film[i] if e.film is not None else None, instruction)
            feats.append(x)
        tokens = e.proj(self.pool(x))
        if not e.keypoints:
            return tokens
        fmap = e.kp_conv(feats[-2])
        heat = torch.softmax(fmap.flatten(2), dim=-1)
        coords = heat @ self.coords
        return torch.cat([tokens, e.kp_proj(coords.flatten(1))[:, None]], dim=1)


class EncoderGraph(nn.Module):
    """(images, state, token_ids, token_mask) -> (context, context_mask, obs_latent)."""

    def __init__(self, policy: FlarePolicy) -> None:
        super().__init__()
        cfg = policy.cfg
        enc = policy.encoder
        if not isinstance(enc.image, ImageEncoder) or not isinstance(enc.text, InstructionEncoder):
            raise ExportError("export supports the built-in CNN and word-level instruction encoders; "
                              "policies with pretrained vision/text towers run on the torch backend")
        self.enc: ObservationEncoder = enc
        self.image = ImageGraph(enc.image, cfg.image_size)
        self.heads = cfg.heads
        self.register_buffer("state_mean", policy.state_mean.clone())
        self.register_buffer("state_std", policy.state_std.clone())

    def forward(self, images: torch.Tensor, state: torch.Tensor, token_ids: torch.Tensor, token_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.enc
        b, n_cam = images.shape[0], images.shape[1]
        text = e.text.embed(token_ids) + e.text.pos
        cond = instruction_vector(text, token_mask).repeat_interleave(n_cam, 0) if e.cfg.film else None
        img = self.image(images.flatten(0, 1), cond)
        img = img.reshape(b, n_cam, img.shape[1], img.shape[2]) + e.camera_embed
        state_n = (state - self.state_mean) / self.state_std
        tokens = torch.cat([img.flatten(1, 2), text, e.state(state_n)[:, None]], dim=1)
        n_img = img.shape[1] * img.shape[2]
        one = torch.ones_like(token_mask[:, :1])
        mask = torch.cat([one.expand(b, n_img), token_mask, one], dim=1)
        bias = torch.where(mask, 0.0, MASK_VALUE)[:, None, None, :]
        x = tokens
        for layer in e.fuse.layers:  # norm_first TransformerEncoderLayer, ReLU MLP, no dropout at inference
            x = x + self_attention(layer.self_attn, layer.norm1(x), bias)
            x = x + layer.linear2(F.relu(layer.linear1(layer.norm2(x))))
        context = e.norm(x)
        maskf = mask.to(context.dtype)[..., None]
        pooled = (context * maskf).sum(1) / maskf.sum(1)
        return context, mask, e.latent(pooled)


class _BlockConsts(nn.Module):
    """Per-block weights re-packed for inference: softmax scale folded into the query projections."""

    def __init__(self, blk: DiTBlock, heads: int) -> None:
        super().__init__()
        d = blk.attn.embed_dim
        scale = 1.0 / math.sqrt(d // heads)
        w, b = blk.attn.in_proj_weight.detach().clone(), blk.attn.in_proj_bias.detach().clone()
        w[:d] *= scale
        b[:d] *= scale
        for i, part in enumerate("qkv"):
            self.register_buffer(f"{part}_w", w[i * d:(i + 1) * d].clone())
            self.register_buffer(f"{part}_b", b[i * d:(i + 1) * d].clone())
        wq, wk, wv, bq, bk, bv = (t.detach().clone() for t in _split_in_proj(blk.cross))
        self.register_buffer("cq_w", wq * scale)
        self.register_buffer("cq_b", bq * scale)
        self.register_buffer("ckv_w", torch.cat([wk, wv]))
        self.register_buffer("ckv_b", torch.cat([bk, bv]))


class SamplerGraph(nn.Module):
    """(context, context_mask, state, noise) -> (actions, future_latents): the unrolled N-step Euler sampler.

    One observation (context batch 1) and K candidates (the noise batch). Reproduces `FlarePolicy.sample_many`.
    Tokens are kept as a 2-D (K * tokens, dim) matrix so every linear layer is one GEMM with its bias.
    """

    def __init__(self, policy: FlarePolicy, steps: int) -> None:
        super().__init__()
        cfg = policy.cfg
        self.p, self.steps, self.m, self.heads, self.dim = policy, steps, cfg.future_tokens, cfg.heads, cfg.dim
        self.n_tok, self.horizon = 1 + cfg.future_tokens + cfg.horizon, cfg.horizon
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            self.register_buffer(name, getattr(policy, name).clone())
        self.consts = nn.ModuleList(_BlockConsts(blk, cfg.heads) for blk in policy.blocks)
        with torch.no_grad():  # flow-time conditioning: identical for all candidates, a constant per step
            for i in range(steps):
                cond = policy.time_mlp(timestep_embedding(torch.tensor([i / steps]), cfg.dim))
                for j, blk in enumerate(policy.blocks):
                    s1, c1, g1, s2, c2, g2, s3, c3, g3 = blk.ada(cond).chunk(9, dim=-1)
                    mod = torch.cat([s1, 1 + c1, g1, s2, 1 + c2, g2, s3, 1 + c3, g3])  # (9, D)
                    self.register_buffer(f"mod_{i}_{j}", mod.contiguous())

    def _cross_consts(self, j: int, context: torch.Tensor, cbias: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-attention of block j folded with the observation's context (constant for the whole decision).

        Per head h: scores_h = (x Wq_h' + bq_h) K_h' = x (Wq_h' K_h') + bq_h K_h' and out = sum_h P_h (V_h Wo_h'),
        so with A = [Wq_h' K_h']_h (D, heads*T) and B = [V_h Wo_h']_h (heads*T, D) every candidate token needs just
        x @ A (+ bias and mask) -> softmax per head -> @ B: two GEMMs, no head transposes, fewer FLOPs than the
        query and output projections. Returns A, the (1, heads*T) score bias (query bias + padding mask) and B.
        """
        c, blk = self.consts[j], self.p.blocks[j]
        h_, d = self.heads, self.dim
        dh = d // h_
        kv = F.linear(context[0], c.ckv_w, c.ckv_b)  # (T, 2D)
        keys = kv[:, :d].reshape(-1, h_, dh).permute(1, 2, 0)    # (heads, dh, T)
        values = kv[:, d:].reshape(-1, h_, dh).transpose(0, 1)   # (heads, T, dh)
        t = keys.shape[-1]
        wq = c.cq_w.reshape(h_, dh, d).transpose(1, 2)           # (heads, D, dh), softmax scale folded in
        a = (wq @ keys).transpose(0, 1).reshape(d, h_ * t)        # (D, heads*T)
        bias = (c.cq_b.reshape(h_, 1, dh) @ keys).reshape(1, h_ * t) + cbias.repeat(1, h_)
        wo = blk.cross.out_proj.weight.reshape(d, h_, dh).permute(1, 2, 0)  # (heads, dh, D)
        b = (values @ wo).reshape(h_ * t, d)                      # (heads*T, D)
        return a, bias, b

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        scores = q @ k
        if bias is not None:
            scores = scores + bias
        return torch.softmax(scores, dim=-1) @ v

    def _block(self, j: int, x: torch.Tensor, mod: torch.Tensor,
               cross: tuple[torch.Tensor, torch.Tensor, torch.Tensor], actions_only: bool) -> torch.Tensor:
        """One DiT block on (K * n, D) tokens. adaLN: LayerNorm with the step's (1 + scale, shift) as its affine.

        `actions_only`: the caller only needs the action tokens' outputs (the last block of a step: the next step
        rebuilds the state and future tokens), so queries, MLP and cross-attention run on those rows only.
        """
        blk, c = self.p.blocks[j], self.consts[j]
        h_, n, d, hz = self.heads, self.n_tok, self.dim, self.horizon
        dh = d // h_
        h = F.layer_norm(x, (d,), mod[1], mod[0], blk.norm1.eps)
        # Reshapes use -1 for K (constant shape tensors: no Shape/Gather/Concat chains in the graph), and q, k, v
        # are three GEMMs laid out per head by their own transposes (no Gather/Split copies of one fused qkv): on a
        # small CPU such data-movement ops cost about as much as the attention maths itself.
        keys = F.linear(h, c.k_w, c.k_b).reshape(-1, n, h_, dh).permute(0, 2, 3, 1)     # (K, heads, dh, n)
        values = F.linear(h, c.v_w, c.v_b).reshape(-1, n, h_, dh).transpose(1, 2)       # (K, heads, n, dh)
        rows = n
        if actions_only:
            x = x.reshape(-1, n, d)[:, n - hz:].reshape(-1, d)
            h = h.reshape(-1, n, d)[:, n - hz:].reshape(-1, d)
            rows = hz
        q = F.linear(h, c.q_w, c.q_b).reshape(-1, rows, h_, dh).transpose(1, 2)           # (K, heads, rows, dh)
        att = self._attend(q, keys, values, None)  # (K, heads, rows, dh)
        x = x + mod[2] * blk.attn.out_proj(att.transpose(1, 2).reshape(-1, d))
        h = F.layer_norm(x, (d,), mod[4], mod[3], blk.norm2.eps)
        # cross-attention against the one shared context, folded into two GEMMs (see `_cross_consts`)
        a, bias, b = cross
        t = a.shape[1] // h_
        probs = torch.softmax((h @ a + bias).reshape(-1, h_, t), dim=-1).reshape(-1, h_ * t)
        x = x + mod[5] * (probs @ b + blk.cross.out_proj.bias)
        h = F.layer_norm(x, (d,), mod[7], mod[6], blk.norm3.eps)
        return x + mod[8] * blk.mlp(h)

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor, state: torch.Tensor, noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        p, n_steps, m, n, d = self.p, self.steps, self.m, self.n_tok, self.dim
        k, hz, a = noise.shape[0], self.horizon, noise.shape[2]
        cbias = torch.where(context_mask, 0.0, MASK_VALUE)  # (1, T)
        cross = [self._cross_consts(j, context, cbias) for j in range(len(p.blocks))]  # once per decision
        state_tok = p.state_token((state - self.state_mean) / self.state_std)  # (1, D)
        prefix = torch.cat([state_tok, p.future_tokens], dim=0)[None].expand(k, -1, -1)  # (K, 1 + M, D)
        x = noise
        future = prefix[:, 1:1 + m]
        last = len(p.blocks) - 1
        for i in range(n_steps):
            tokens = torch.cat([prefix, p.action_in(x) + p.action_pos], dim=1).reshape(-1, d)
            flare_step = i == n_steps - 1
            for j in range(len(p.blocks)):
                actions_only = j == last and not (flare_step and p.cfg.flare_layer == last + 1)
                tokens = self._block(j, tokens, getattr(self, f"mod_{i}_{j}"), cross[j], actions_only)
                if j + 1 == p.cfg.flare_layer and flare_step:
                    future = tokens.reshape(-1, n, d)[:, 1:1 + m]
            if not actions_only:
                tokens = tokens.reshape(-1, n, d)[:, 1 + m:].reshape(-1, d)
            x = x + (p.action_out(p.out_norm(tokens)) / n_steps).reshape(-1, hz, a)
        return x * self.action_std + self.action_mean, p.flare_head(future)


class WorldModelGraph(nn.Module):
    """(obs_latent (1, L), actions (K, H, A) raw) -> (next_latent, progress, failure_prob), each per candidate."""

    def __init__(self, wm: LatentWorldModel, action_mean: torch.Tensor, action_std: torch.Tensor) -> None:
        super().__init__()
        self.wm = wm
        self.register_buffer("action_mean", action_mean.clone())
        self.register_buffer("action_std", action_std.clone())

    def forward(self, obs_latent: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        wm = self.wm
        k = actions.shape[0]
        z = obs_latent.expand(k, -1)
        chunk_n = ((actions - self.action_mean) / self.action_std).flatten(1)
        h = wm.norm(wm.blocks(wm.inp(torch.cat([z, chunk_n], dim=1))))
        return z + wm.delta(h), torch.sigmoid(wm.progress(h))[:, 0], torch.sigmoid(wm.failure(h))[:, 0]
