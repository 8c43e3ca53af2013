"""Shipped checkpoints: inference-only copies (no optimiser state) of the `tiny` models, committed to the repo.

`wm-vla models ship` writes them from a `wm-vla train tiny` output; `MANIFEST.json` records each file's sha256 so a
test (and `verify_release`) can tell that the committed files are whole and match their configs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from wm_vla.models.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint
from wm_vla.models.errors import CheckpointError

SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "tiny"
SHIPPED_DIRS = {"arm": SHIPPED_DIR, "quadruped": SHIPPED_DIR.parent / "tiny_quadruped"}  # per sim world
MANIFEST = "MANIFEST.json"
ROLES = ("policy", "wm_student", "wm_teacher", "wm_encoder")
# wm_encoder (optional): the policy whose encoder gives the world models their latent, when they were trained in another
# latent than the acting policy's (`wm-vla train world-model --policy`); only its encoder runs at inference
POLICY_ROLES = ("policy", "wm_encoder")


def _kind(role: str) -> str:
    return "policy" if role in POLICY_ROLES else "world_model"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship(sources: dict[str, Path], out: Path = SHIPPED_DIR, recipe: str = "") -> Path:
    """Copy each role's checkpoint to `out/<role>` without its extra tensors (optimiser state) and write the manifest."""
    unknown = sorted(set(sources) - set(ROLES))
    if unknown:
        raise CheckpointError(f"unknown checkpoint roles {unknown}; expected some of {list(ROLES)}")
    out = Path(out)
    if "wm_student" in sources and "wm_encoder" not in sources and (out / "wm_encoder").exists():
        shutil.rmtree(out / "wm_encoder")  # new world models in the policy's own latent: the old encoder must go
    files = _kept_entries(out, set(sources))
    for role, src in sources.items():
        model, extra, _ = load_checkpoint(Path(src), expect=_kind(role))
        dst = out / role
        if dst.exists():
            shutil.rmtree(dst)
        extra = {k: v for k, v in extra.items() if k not in ("history",)} | {"shipped_from": str(src)}
        save_checkpoint(model, dst, extra=extra)
        for name in (CONFIG, WEIGHTS):
            files[f"{role}/{name}"] = _sha256(dst / name)
    (out / MANIFEST).write_text(json.dumps({"recipe": recipe, "files": files}, indent=2))
    return out


def _kept_entries(out: Path, replaced: set[str]) -> dict[str, str]:
    """The manifest entries of the roles not shipped this time whose files are still there (shipping a subset of the
    roles keeps the others listed)."""
    try:
        old = json.loads((out / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {rel: digest for rel, digest in old.items()
            if rel.split("/")[0] not in replaced and (out / rel).is_file()}


def verify_release(root: Path = SHIPPED_DIR) -> dict[str, str]:
    """Check the shipped files against the manifest and that each loads; returns {file: sha256}."""
    manifest_path = Path(root) / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"no shipped checkpoints at {root} ({MANIFEST} missing): run `make models`")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path} is malformed: {exc}") from exc
    for rel, digest in files.items():
        path = Path(root) / rel
        if not path.is_file():
            raise CheckpointError(f"shipped file {path} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"shipped file {path} does not match {MANIFEST} (sha256 differs): "
                                  "re-run `make models` or restore it from git")
    for role in {rel.split("/")[0] for rel in files}:
        load_checkpoint(Path(root) / role, expect=_kind(role))
    return files
