"""TensorRT engine cache: engines keyed by ONNX hash + TensorRT version + GPU name + precision (+ K profile).

`<root>/manifest.json` (schema: trt_engines/manifest.schema.json) records every engine with its key and the
SHA-256 of the engine file. An engine is used only when its entry matches the current key exactly and its file
hash matches the entry; anything else is reported as stale with the reason and rebuilt (`get_or_build`) or
refused (`require`). Pure Python: testable without TensorRT or a GPU.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wm_vla.pickle_guard import pickle_kind, refusal
from wm_vla.runtime.errors import EngineManifestError

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineKey:
    graph: str              # encoder | sampler | world_model
    onnx_sha256: str
    tensorrt_version: str
    gpu: str                # device name, e.g. "NVIDIA GeForce RTX 4090" or "Orin"
    precision: str          # fp32 | fp16 | int8
    profile: tuple[int, int, int]  # (min, opt, max) of the dynamic batch axis

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineManifestError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        lo, opt, hi = self.profile
        if not 1 <= lo <= opt <= hi:
            raise EngineManifestError(f"optimisation profile must satisfy 1 <= min <= opt <= max, got {self.profile}")

    @property
    def id(self) -> str:
        """Short stable identifier of the full key (used in file names)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-").lower()[:40]
        return f"{self.graph}-{self.precision}-{gpu}-trt{self.tensorrt_version}-{self.id}.engine"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "profile": list(self.profile)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EngineCache:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST

    # ----- manifest -----
    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"schema_version": SCHEMA_VERSION, "engines": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineManifestError(f"{self.manifest_path} is not valid JSON ({exc}); delete it to rebuild") from exc
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION \
                or not isinstance(data.get("engines"), dict):
            raise EngineManifestError(f"{self.manifest_path} is not an engine manifest (schema_version "
                                      f"{SCHEMA_VERSION} with an `engines` object); delete it to rebuild")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.manifest_path)

    # ----- lookup -----
    def status(self, key: EngineKey) -> tuple[Path | None, str]:
        """(engine path, "ok") when usable; otherwise (None, why it is missing or stale)."""
        engines = self.manifest()["engines"]
        entry = engines.get(key.id)
        if entry is None:
            same_graph = [e for e in engines.values() if e.get("key", {}).get("graph") == key.graph]
            if not same_graph:
                return None, f"no engine for the {key.graph} graph in {self.manifest_path}"
            diffs = sorted({f"{f}: cached {e['key'].get(f)!r} != current {v!r}" for e in same_graph
                            for f, v in key.to_json().items() if e["key"].get(f) != v})
            return None, f"cached {key.graph} engine(s) do not match: " + "; ".join(diffs)
        if entry.get("key") != key.to_json():
            return None, f"manifest entry {key.id} does not match its key (edited manifest?)"
        path = self.root / entry["engine_file"]
        if not path.is_file():
            return None, f"engine file {path} listed in the manifest is missing"
        if _sha256(path.read_bytes()) != entry.get("engine_sha256"):
            return None, f"engine file {path} does not match the SHA-256 in the manifest (corrupt or replaced)"
        kind = pickle_kind(path)
        if kind:
            return None, refusal(path, kind, "a TensorRT engine")
        return path, "ok"

    def require(self, key: EngineKey) -> Path:
        """The engine for `key`, or EngineManifestError saying why none can be used (never a stale one)."""
        path, why = self.status(key)
        if path is None:
            raise EngineManifestError(f"{why}; run `wm-vla engines build`")
        return path

    def store(self, key: EngineKey, engine: bytes, info: dict[str, Any] | None = None) -> Path:
        """Write an engine file and its manifest entry (replacing other entries of the same file name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / key.file_name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(engine)
        os.replace(tmp, path)
        data = self.manifest()
        data["engines"][key.id] = {"key": key.to_json(), "engine_file": path.name, "engine_sha256": _sha256(engine),
                                   "bytes": len(engine), "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(
                                       timespec="seconds"), **(info or {})}
        self._write(data)
        return path

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes], rebuild: bool = False) -> tuple[Path, str]:
        """A usable engine for `key`: cached, or built now (stale or missing ones are rebuilt, with the reason)."""
        path, why = (None, "rebuild requested") if rebuild else self.status(key)
        if path is not None:
            return path, "cached"
        log.warning("building TensorRT engine %s: %s", key.file_name, why)
        return self.store(key, build()), f"built ({why})"

    def prune(self) -> list[str]:
        """Delete engine files that no manifest entry references; returns their names."""
        keep = {e["engine_file"] for e in self.manifest()["engines"].values()}
        gone = [p.name for p in self.root.glob("*.engine") if p.name not in keep]
        for name in gone:
            (self.root / name).unlink()
        return gone
