"""FLARE policy, latent world model, checkpoints and GPC ranker: behaviour on small real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_vla.models.checkpoint import load_checkpoint, load_world_models, save_checkpoint
from wm_vla.models.config import PolicyConfig, from_dict, policy_preset, world_model_preset
from wm_vla.models.encoders import instruction_vector
from wm_vla.models.errors import CheckpointError, ModelConfigError, ObservationError
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch
from wm_vla.models.world_model import LatentWorldModel, WorldModelEnsemble
from wm_vla.robots import load_profile
from wm_vla.runtime.errors import RankerError
from wm_vla.runtime.ranker import GpcRanker, KinematicPenalty, RankerConfig

SMALL = dict(image_size=32, dim=32, heads=2, dit_layers=2, flare_layer=1, latent_dim=16, cnn_channels=(8, 16),
             horizon=8, exec_horizon=4, vocab=("<unk>", "touch", "the", "red", "cube"), denoise_steps=4)


def small_policy(**overrides: object) -> FlarePolicy:
    torch.manual_seed(0)
    return FlarePolicy(policy_preset("tiny", **{**SMALL, **overrides}))


def obs(b: int = 1, size: int = 32, seed: int = 0) -> ObsBatch:
    g = torch.Generator().manual_seed(seed)
    return ObsBatch(torch.rand(b, 2, 3, size, size, generator=g), torch.randn(b, 7, generator=g), ["touch the red cube"] * b)


def test_sample_shapes_share_one_encoding_and_are_deterministic() -> None:
    policy = small_policy().eval()
    a = policy.sample(obs(), 5, generator=torch.Generator().manual_seed(3))
    b = policy.sample(obs(), 5, generator=torch.Generator().manual_seed(3))
    assert a.actions.shape == (5, 8, 7) and a.future_latents.shape == (5, 4, 16) and a.obs_latent.shape == (16,)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.future_latents, b.future_latents)
    c = policy.sample(obs(), 5, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a.actions, c.actions)
    # candidate 0 of K equals the single sample drawn with the same generator state
    single = policy.sample(obs(), 1, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(single.actions[0], a.actions[0], rtol=0, atol=1e-6)
    # replaying the recorded noise reproduces the chunks exactly
    assert torch.equal(policy.sample(obs(), 5, noise=a.noise).actions, a.actions)


def test_batched_sampling_matches_one_at_a_time() -> None:
    policy = small_policy().eval()
    batch = obs(3)
    actions, z, _future, noise = policy.sample_many(batch, 2, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        one = ObsBatch(batch.images[i:i + 1], batch.state[i:i + 1], batch.instructions[i:i + 1])
        s = policy.sample(one, 2, noise=noise[i])
        torch.testing.assert_close(s.actions, actions[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s.obs_latent, z[i], rtol=1e-5, atol=1e-5)


def test_flare_and_flow_losses_decrease_on_a_tiny_overfit() -> None:
    policy = small_policy()
    batch, future = obs(8, seed=1), obs(8, seed=2)
    actions = torch.randn(8, 8, 7, generator=torch.Generator().manual_seed(5))
    pad = torch.zeros(8, 8, dtype=torch.bool)
    opt = torch.optim.Adam([p for n, p in policy.named_parameters() if not n.startswith("target_encoder")], lr=2e-3)
    torch.manual_seed(0)
    first = last = None
    for step in range(120):
        loss, m = policy.loss(batch, actions, pad, future)
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.update_target()
        first = first or m
        last = m
    assert last["flare"] < 0.5 * first["flare"], (first, last)
    assert last["flow"] < first["flow"]


def test_flare_weight_zero_leaves_the_future_head_untrained() -> None:
    policy = small_policy(flare_weight=0.0)
    before = policy.flare_head[0].weight.clone()
    loss, _ = policy.loss(obs(4), torch.randn(4, 8, 7), torch.zeros(4, 8, dtype=torch.bool), obs(4, seed=3))
    loss.backward()
    assert policy.flare_head[0].weight.grad is None or not policy.flare_head[0].weight.grad.any()
    assert torch.equal(before, policy.flare_head[0].weight)


def test_padding_is_masked_out_of_the_flow_loss() -> None:
    policy = small_policy()
    actions = torch.randn(2, 8, 7)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[:, 4:] = True
    torch.manual_seed(1)
    a, _ = policy.loss(obs(2), actions, pad, obs(2), flare_weight=0.0)
    actions[:, 4:] += 100.0  # garbage beyond the episode end must not matter
    torch.manual_seed(1)
    b, _ = policy.loss(obs(2), actions, pad, obs(2), flare_weight=0.0)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("bad", "match"), [
    (ObsBatch(torch.rand(1, 1, 3, 32, 32), torch.zeros(1, 7), ["x"]), "images must be"),
    (ObsBatch(torch.rand(1, 2, 3, 16, 16), torch.zeros(1, 7), ["x"]), "images must be"),
    (ObsBatch(torch.rand(1, 2, 3, 32, 32), torch.zeros(1, 6), ["x"]), "state must be"),
    (ObsBatch(torch.rand(1, 2, 3, 32, 32), torch.full((1, 7), float("nan")), ["x"]), "NaN"),
    (ObsBatch(torch.rand(1, 2, 3, 32, 32), torch.zeros(1, 7), []), "one instruction"),
])
def test_malformed_observations_raise_typed_errors(bad: ObsBatch, match: str) -> None:
    with pytest.raises(ObservationError, match=match):
        small_policy().sample(bad, 2)


def test_unknown_instruction_words_still_sample() -> None:
    policy = small_policy().eval()
    out = policy.sample(ObsBatch(obs().images, obs().state, ["grab the purple thing"]), 2)
    assert torch.isfinite(out.actions).all()


def test_film_conditions_the_image_features_on_the_instruction() -> None:
    plain, film = small_policy().eval(), small_policy(film=True).eval()
    missing, unexpected = plain.load_state_dict(film.state_dict(), strict=False)
    assert not missing and unexpected and all(".film." in k for k in unexpected)
    images = obs().images[:, 0]

    def image_tokens(instruction: str) -> torch.Tensor:
        text, mask = film.encoder.text([instruction], images.device)
        return film.encoder.image(images, instruction_vector(text, mask))

    with torch.no_grad():
        # zero-initialised FiLM heads: exactly the unconditioned CNN, so training starts from the plain policy
        assert torch.equal(image_tokens("touch the red cube"), plain.encoder.image(images))
        torch.testing.assert_close(film.encode(obs())[0], plain.encode(obs())[0], rtol=0, atol=0)
        for head in film.encoder.image.film:
            torch.nn.init.normal_(head.weight, std=0.5)
        assert not torch.allclose(image_tokens("touch the red cube"), image_tokens("touch the blue cube"), atol=1e-3)
        with pytest.raises(ObservationError, match="needs the instruction"):
            film.encoder.image(images)
    with pytest.raises(ModelConfigError, match="film conditions the built-in CNN"):
        from_dict(PolicyConfig, {**SMALL, "film": True, "vision_tower": "/models/siglip"}).validate()


@pytest.mark.parametrize("film", [False, True])
def test_checkpoint_round_trip_is_bit_exact(tmp_path: Path, film: bool) -> None:
    policy = small_policy(film=film).eval()
    policy.set_normalization(torch.arange(7.0), torch.ones(7) * 2, torch.arange(7.0) / 3, torch.ones(7) * 0.5)
    save_checkpoint(policy, tmp_path / "p", extra={"step": 3})
    loaded, extra, _ = load_checkpoint(tmp_path / "p", expect="policy")
    assert extra == {"step": 3}
    for (k, v), (k2, v2) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k
    assert isinstance(loaded, FlarePolicy) and loaded.cfg == policy.cfg
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    assert torch.equal(policy.sample(obs(), 3, generator=g()).actions, loaded.sample(obs(), 3, generator=g()).actions)
    wm = LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8))
    save_checkpoint(wm, tmp_path / "w")
    wm2, _, _ = load_checkpoint(tmp_path / "w", expect="world_model")
    assert all(torch.equal(a, b) for a, b in zip(wm.state_dict().values(), wm2.state_dict().values(), strict=True))


def test_an_ensemble_of_world_models_predicts_their_mean(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = (LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8)) for _ in range(2))
    z, chunks = torch.randn(5, 16), torch.randn(5, 8, 7)
    out_a, out_b = a.eval()(z, chunks), b.eval()(z, chunks)
    both = WorldModelEnsemble([a, b]).eval()(z, chunks)
    assert torch.allclose(both.progress, (out_a.progress + out_b.progress) / 2)
    assert torch.allclose(both.failure_prob, (out_a.failure_prob + out_b.failure_prob) / 2, atol=1e-6)
    assert torch.allclose(both.next_latent, (out_a.next_latent + out_b.next_latent) / 2)
    # from checkpoints: one path gives the model itself, several their ensemble, ranked like any world model
    save_checkpoint(a, tmp_path / "a")
    save_checkpoint(b, tmp_path / "b")
    single, _ = load_world_models(tmp_path / "a")
    assert isinstance(single, LatentWorldModel)
    loaded, tensors = load_world_models([tmp_path / "a", str(tmp_path / "b")])
    assert isinstance(loaded, WorldModelEnsemble) and tensors == {}
    assert torch.allclose(loaded(z, chunks).progress, both.progress)
    policy = small_policy()
    ranking = GpcRanker(loaded, policy.action_mean, policy.action_std).rank(z[0], chunks)
    with torch.no_grad():
        out = loaded(z[0].expand(5, -1), (chunks - policy.action_mean) / policy.action_std)
    expected = (out.progress - out.failure_prob).numpy()
    assert ranking.chosen == int(np.argmax(expected)) and np.allclose(ranking.scores, expected, atol=1e-5)
    # pessimism: each candidate's mean score minus the weight times its spread over the members
    with torch.no_grad():
        per_member = torch.stack([o.progress - o.failure_prob for o in loaded.member_outputs(
            z[0].expand(5, -1), (chunks - policy.action_mean) / policy.action_std)]).numpy()
    cautious = GpcRanker(loaded, policy.action_mean, policy.action_std,
                         config=RankerConfig(disagreement_weight=2.0)).rank(z[0], chunks)
    assert np.allclose(cautious.scores, per_member.mean(0) - 2.0 * per_member.std(0), atol=1e-5)
    assert cautious.chosen == int(np.argmax(cautious.scores))
    # one world model has no spread: the weight changes nothing
    alone = GpcRanker(single, policy.action_mean, policy.action_std, config=RankerConfig(disagreement_weight=2.0))
    plain = GpcRanker(single, policy.action_mean, policy.action_std)
    assert np.array_equal(alone.rank(z[0], chunks).scores, plain.rank(z[0], chunks).scores)


def test_world_models_that_cannot_be_ensembled_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="at least one"):
        WorldModelEnsemble([])
    save_checkpoint(LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8)), tmp_path / "a")
    save_checkpoint(LatentWorldModel(world_model_preset("student", latent_dim=32, action_dim=7, horizon=8)), tmp_path / "b")
    with pytest.raises(CheckpointError, match="cannot be ensembled.*latent_dim"):
        load_world_models([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_world_models([tmp_path / "a", tmp_path / "missing"])
    with pytest.raises(CheckpointError, match="no world-model checkpoint"):
        load_world_models([])
    save_checkpoint(small_policy(), tmp_path / "p")
    with pytest.raises(CheckpointError, match="expected a world_model"):
        load_world_models([tmp_path / "a", tmp_path / "p"])


def test_bad_checkpoints_are_refused_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")
    wm = LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8))
    ckpt = save_checkpoint(wm, tmp_path / "w")
    with pytest.raises(CheckpointError, match="expected a policy"):
        load_checkpoint(ckpt, expect="policy")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["latent_dim"] = 32  # config no longer matches the weights
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(ckpt)
    meta["config"]["bogus"] = 1
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown WorldModelConfig keys: bogus"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


def test_a_pickle_posing_as_weights_is_never_unpickled(tmp_path: Path) -> None:
    wm = LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8))
    ckpt = save_checkpoint(wm, tmp_path / "w")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (marker.write_text, ("executed",))

    torch.save({"weights": Exploit()}, ckpt / "model.safetensors")  # a pickle under the weights' name
    with pytest.raises(CheckpointError, match="torch.save archive.*never unpickles"):
        load_checkpoint(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(("field", "value", "match"), [
    ("preset", "huge", "unknown preset"), ("exec_horizon", 99, "exec_horizon"), ("dim", 31, "divisible"),
    ("flare_layer", 9, "flare_layer"), ("image_tokens", 5, "square"), ("horizon", 0, "positive"),
])
def test_bad_policy_configs_are_rejected(field: str, value: object, match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        from_dict(PolicyConfig, {**SMALL, field: value}).validate()


def _wm_that_fears_positive_first_joint() -> LatentWorldModel:
    """Train a small world model on a synthetic rule: chunks whose joint-0 mean is positive fail."""
    torch.manual_seed(0)
    wm = LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8))
    opt = torch.optim.Adam(wm.parameters(), lr=3e-3)
    for _ in range(300):
        z, chunk = torch.randn(128, 16), torch.randn(128, 8, 7)
        fail = (chunk[..., 0].mean(1) > 0).float()
        out = wm(z, chunk)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.failure_logit, fail) + \
            torch.nn.functional.mse_loss(out.progress, 1 - fail)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wm.eval()


def test_ranker_picks_the_known_best_candidate() -> None:
    wm = _wm_that_fears_positive_first_joint()
    ranker = GpcRanker(wm, torch.zeros(7), torch.ones(7))
    chunks = torch.zeros(6, 8, 7)
    chunks[:, :, 0] = torch.tensor([1.5, 0.8, 2.0, -1.5, 0.6, 1.0])[:, None]
    ranking = ranker.rank(torch.randn(16), chunks)
    assert ranking.chosen == 3
    assert ranking.failure_prob[3] < 0.2 and (np.delete(ranking.failure_prob, 3) > 0.5).all()
    assert set(ranking.stage_ms) == {"wm_rollout", "score"}


def test_switch_margin_keeps_the_first_sample_unless_another_is_clearly_better() -> None:
    wm = _wm_that_fears_positive_first_joint()
    chunks = torch.zeros(3, 8, 7)
    chunks[:, :, 0] = torch.tensor([1.5, -1.5, 0.8])[:, None]  # candidate 0 is feared, candidate 1 is safe
    plain = GpcRanker(wm, torch.zeros(7), torch.ones(7)).rank(torch.zeros(16), chunks)
    gap = plain.scores[1] - plain.scores[0]
    assert plain.chosen == 1 and gap > 0.1
    keep = GpcRanker(wm, torch.zeros(7), torch.ones(7), config=RankerConfig(switch_margin=gap + 0.01))
    switch = GpcRanker(wm, torch.zeros(7), torch.ones(7), config=RankerConfig(switch_margin=gap - 0.01))
    assert keep.rank(torch.zeros(16), chunks).chosen == 0
    assert switch.rank(torch.zeros(16), chunks).chosen == 1


def test_kinematic_penalties_veto_limit_and_workspace_violations() -> None:
    profile = load_profile("arm")
    wm = LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8))
    ranker = GpcRanker(wm, torch.zeros(7), torch.ones(7), KinematicPenalty(profile, stride=1), RankerConfig(progress_weight=0, failure_weight=0))
    safe = torch.tensor([0.0, -0.485, 2.093, 0.0, 1.533, 0.0, 0.02])  # the sim's home pose: TCP above the table
    chunks = safe.repeat(3, 8, 1)
    chunks[1, :, 1] = 2.5          # beyond the shoulder_lift limit (1.9)
    chunks[2, :, 1:3] = torch.tensor([1.9, 1.5])  # arm folded down through the table (TCP below z=0.01)
    ranking = ranker.rank(torch.zeros(16), chunks)
    assert ranking.chosen == 0 and ranking.penalty[0] == 0.0
    assert ranking.penalty[1] > 0 and ranking.penalty[2] > 0


def test_gpc_opt_improves_the_world_model_score_within_budget() -> None:
    wm = _wm_that_fears_positive_first_joint()
    ranker = GpcRanker(wm, torch.zeros(7), torch.ones(7))
    z = torch.randn(16)
    chunk = torch.zeros(8, 7)
    chunk[:, 0] = 0.3
    before = wm(z[None], chunk[None])
    refined, steps = ranker.optimize(z, chunk, budget_ms=500, max_steps=30, trust=1.0)
    after = wm(z[None], refined[None])
    assert 0 < steps <= 30
    assert float(after.failure_prob.detach()) < float(before.failure_prob.detach())
    assert (refined - chunk).abs().max() <= 1.0 + 1e-5


def test_chunk_refiner_gives_numpy_gpc_opt_for_the_torch_backend_only() -> None:
    from wm_vla.runtime.backends.torch_backend import TorchBackend
    from wm_vla.runtime.ranker import ChunkRefiner
    from wm_vla.training.pipeline import default_checkpoints, default_wm_encoder

    policy_dir, wm_dir = default_checkpoints()
    policy_dir = default_wm_encoder() or policy_dir  # the policy whose latent (and normalisation) the world model uses
    with pytest.raises(RankerError, match="GPC-OPT needs gradients.*not 'onnxruntime'"):
        ChunkRefiner(type("Ort", (), {"name": "onnxruntime"})())
    with pytest.raises(RankerError, match="with a world model"):
        ChunkRefiner(TorchBackend.from_checkpoints(policy_dir))
    backend = TorchBackend.from_checkpoints(policy_dir, wm_dir)
    with pytest.raises(RankerError, match="budget_ms > 0"):
        ChunkRefiner(backend, budget_ms=0.0)
    refiner = ChunkRefiner(backend, budget_ms=1e3, max_steps=3, trust=0.25)
    refiner.warm_up()
    spec, std = backend.spec, backend.policy.action_std.numpy()
    chunk = np.random.default_rng(0).normal(size=(spec.horizon, spec.action_dim)) * std
    refined, steps = refiner(np.zeros(spec.latent_dim, np.float32), chunk)
    assert steps == 3 and refined.shape == chunk.shape and refined.dtype == chunk.dtype
    assert 0 < np.abs(refined - chunk).max() and np.all(np.abs(refined - chunk) <= 0.25 * std + 1e-5)


def test_ranker_rejects_malformed_candidates() -> None:
    ranker = GpcRanker(LatentWorldModel(world_model_preset("student", latent_dim=16, action_dim=7, horizon=8)),
                       torch.zeros(7), torch.ones(7))
    with pytest.raises(RankerError, match="candidates must be"):
        ranker.rank(torch.zeros(16), torch.zeros(4, 5, 7))
    with pytest.raises(RankerError, match="latent"):
        ranker.rank(torch.zeros(8), torch.zeros(4, 8, 7))
    with pytest.raises(RankerError, match="NaN"):
        ranker.rank(torch.zeros(16), torch.full((4, 8, 7), float("nan")))
