"""The shipped tiny checkpoints: whole, loadable, consistent with each other; tampering is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wm_vla.models.checkpoint import check_world_model_encoder, load_checkpoint
from wm_vla.models.errors import CheckpointError
from wm_vla.models.release import SHIPPED_DIR, ship, verify_release
from wm_vla.training.pipeline import default_checkpoints, default_wm_encoder


def test_shipped_checkpoints_match_manifest_and_each_other() -> None:
    files = verify_release()
    assert {"policy/model.safetensors", "wm_student/model.safetensors", "wm_teacher/model.safetensors"} <= set(files)
    policy_dir, student_dir = default_checkpoints()
    assert policy_dir.parent == SHIPPED_DIR
    policy, _, policy_extra = load_checkpoint(policy_dir, expect="policy")
    assert policy_extra == {}, "shipped checkpoints carry no optimiser state"
    for role in ("wm_student", "wm_teacher"):
        wm, _, _ = load_checkpoint(SHIPPED_DIR / role, expect="world_model")
        assert wm.cfg.latent_dim == policy.cfg.latent_dim and wm.cfg.action_dim == policy.cfg.action_dim
        assert wm.cfg.horizon == policy.cfg.horizon
    assert load_checkpoint(student_dir)[0].cfg.role == "student"
    # the shipped world models rank in the latent of the shipped FiLM encoder (not the policy's): its digest is theirs
    encoder = default_wm_encoder()
    assert encoder == SHIPPED_DIR / "wm_encoder" and load_checkpoint(encoder, expect="policy")[0].cfg.film
    for role in ("wm_student", "wm_teacher"):
        check_world_model_encoder(SHIPPED_DIR / role, encoder)
        with pytest.raises(CheckpointError, match="another policy's encoder"):
            check_world_model_encoder(SHIPPED_DIR / role, policy_dir)


def test_shipped_quadruped_checkpoints() -> None:
    policy_dir, student_dir = default_checkpoints(world="quadruped")
    assert set(verify_release(policy_dir.parent)) == {"policy/config.json", "policy/model.safetensors",
                                                      "wm_student/config.json", "wm_student/model.safetensors"}
    policy = load_checkpoint(policy_dir, expect="policy")[0]
    assert policy.cfg.action_dim == 3 and load_checkpoint(student_dir)[0].cfg.action_dim == 3  # vx, vy, wz
    with pytest.raises(ValueError, match="no shipped checkpoints"):
        default_checkpoints(world="submarine")


def test_verify_refuses_a_modified_or_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    shutil.copytree(SHIPPED_DIR, root)
    weights = root / "wm_student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verify_release(root)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify_release(root)
    (root / "MANIFEST.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed"):
        verify_release(root)
    with pytest.raises(CheckpointError, match="make models"):
        verify_release(tmp_path / "nowhere")


def test_ship_strips_optimiser_state_and_rejects_unknown_roles(tmp_path: Path) -> None:
    out = ship({"wm_student": SHIPPED_DIR / "wm_student"}, tmp_path / "out", recipe="test")
    assert json.loads((out / "MANIFEST.json").read_text())["recipe"] == "test"
    assert set(verify_release(out)) == {"wm_student/config.json", "wm_student/model.safetensors"}
    with pytest.raises(CheckpointError, match="unknown checkpoint roles"):
        ship({"critic": SHIPPED_DIR / "wm_student"}, tmp_path / "bad")
