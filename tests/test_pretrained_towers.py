"""Pretrained HF towers from local directories: tiny random checkpoints created here, safetensors only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from wm_vla.models.checkpoint import load_checkpoint, save_checkpoint
from wm_vla.models.config import policy_preset
from wm_vla.models.errors import CheckpointError
from wm_vla.models.flare_policy import FlarePolicy, ObsBatch



@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=64, image_size=32, patch_size=8))
    vit.save_pretrained(root / "vit", safe_serialization=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "touch", "the", "red", "cube", "push", "to", "left", "target"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(root / "bert")
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(root / "bert", safe_serialization=True)
    return root / "vit", root / "bert"


def _policy(vit: Path, bert: Path) -> FlarePolicy:
    cfg = policy_preset("tiny", image_size=32, dim=32, heads=2, dit_layers=2, flare_layer=1, latent_dim=16, horizon=8,
                        exec_horizon=4, vision_tower=str(vit), text_tower=str(bert))
    return FlarePolicy(cfg).eval()


def test_policy_with_pretrained_towers_samples_and_round_trips(towers: tuple[Path, Path], tmp_path: Path) -> None:
    policy = _policy(*towers)
    obs = ObsBatch(torch.rand(1, 2, 3, 32, 32), torch.zeros(1, 7), ["push the red cube to the left target"])
    out = policy.sample(obs, 3, generator=torch.Generator().manual_seed(0))
    assert out.actions.shape == (3, 8, 7) and torch.isfinite(out.actions).all()
    loss, _ = policy.loss(ObsBatch(obs.images.repeat(2, 1, 1, 1, 1), torch.zeros(2, 7), obs.instructions * 2),
                          torch.randn(2, 8, 7), torch.zeros(2, 8, dtype=torch.bool),
                          ObsBatch(obs.images.repeat(2, 1, 1, 1, 1), torch.zeros(2, 7), obs.instructions * 2))
    loss.backward()
    assert policy.encoder.image.model.embeddings.patch_embeddings.projection.weight.grad is not None  # fine-tuned
    save_checkpoint(policy, tmp_path / "p")
    loaded, _, _ = load_checkpoint(tmp_path / "p", expect="policy")
    again = loaded.sample(obs, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.actions, again.actions)


def test_tower_directories_with_pickled_or_missing_weights_are_refused(towers: tuple[Path, Path], tmp_path: Path) -> None:
    vit, bert = towers
    pickled = tmp_path / "pickled_vit"
    pickled.mkdir()
    (pickled / "config.json").write_text((vit / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickled"):
        _policy(pickled, bert)
    with pytest.raises(CheckpointError, match="does not exist"):
        _policy(tmp_path / "nowhere", bert)
    with pytest.raises(CheckpointError, match="no config.json"):
        _policy(vit, tmp_path)
