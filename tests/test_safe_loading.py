"""Safe loading: every loader of checkpoints, engines, datasets, candidate labels, bags and YAML configs refuses a
crafted pickle-bearing file at the path it reads, with a typed error, and the pickle's payload (which would create a
marker file if it were ever unpickled) never runs. Plus a source scan: no unpickling call anywhere in the code."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_vla.data.errors import BagOpenError, DatasetFormatError
from wm_vla.models.checkpoint import load_checkpoint, read_meta
from wm_vla.models.config import PolicyConfig, from_dict
from wm_vla.models.errors import CheckpointError
from wm_vla.pickle_guard import pickle_kind
from wm_vla.robots.errors import ProfileError
from wm_vla.runtime.errors import DeviceProfileError, EngineManifestError, OnnxModelError
from wm_vla.training.errors import DatasetFeatureError
from wm_vla.training.pipeline import default_checkpoints

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls Path.write_text(marker, "payload ran")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "payload ran"))


def raw_pickle(path: Path, marker: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps({"weights": Payload(marker)}, protocol=4)
    path.write_bytes(data)
    return data


def torch_archive(path: Path, marker: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": Payload(marker)}, path)
    return path.read_bytes()


def _checkpoint_copy(tmp: Path, role: int = 1) -> Path:
    dst = tmp / "ckpt"
    shutil.copytree(default_checkpoints()[role], dst)
    return dst


def case_checkpoint_weights(tmp: Path, marker: Path) -> Callable[[], object]:
    ckpt = _checkpoint_copy(tmp)
    raw_pickle(ckpt / "model.safetensors", marker)  # a raw pickle posing as the weights
    return lambda: load_checkpoint(ckpt)


def case_checkpoint_only_pt(tmp: Path, marker: Path) -> Callable[[], object]:
    ckpt = _checkpoint_copy(tmp, 0)
    (ckpt / "model.safetensors").unlink()
    torch_archive(ckpt / "model.pt", marker)  # what a torch user would ship
    return lambda: load_checkpoint(ckpt, expect="policy")


def case_candidate_label_shard(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.training.candidate_labels import load_candidate_set

    root = tmp / "labels"
    meta = {"format": "wm_vla.candidate_labels/1", "cameras": ["front"], "image_size": 32, "horizon": 8,
            "action_dim": 7, "state_dim": 7, "shards": 1}
    root.mkdir()
    (root / "meta.json").write_text(json.dumps(meta))
    torch_archive(root / "shard-000.safetensors", marker)
    (root / "shard-000.json").write_text(json.dumps({"instructions": ["x"]}))
    return lambda: load_candidate_set(root, ("front",), 32, 8, 7, 7)


def case_onnx_graph(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.runtime.backends.ort_backend import OrtBackend
    from wm_vla.runtime.spec import ModelSpec

    cfg = from_dict(PolicyConfig, read_meta(default_checkpoints()[0])["config"])
    out = tmp / "onnx"
    graphs = {}
    for name in ("encoder", "sampler"):
        data = raw_pickle(out / f"{name}.onnx", marker)  # the hash in export.json even matches the pickle
        graphs[name] = {"file": f"{name}.onnx", "sha256": hashlib.sha256(data).hexdigest()}
    (out / "export.json").write_text(json.dumps({"format_version": 1, "graphs": graphs,
                                                 "spec": ModelSpec.from_policy_config(cfg, 4, False).to_json()}))
    return lambda: OrtBackend(out, verify_hashes=False)


def case_tensorrt_engine(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.runtime.engine_cache import EngineCache, EngineKey

    key = EngineKey("sampler", "0" * 64, "10.0", "Orin", "fp16", (1, 16, 64))
    cache = EngineCache(tmp / "engines")
    cache.store(key, pickle.dumps(Payload(marker), protocol=4))  # manifest and sha256 consistent with the pickle
    return lambda: cache.require(key)


def case_lerobot_dataset(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.training.datasets import load_frames

    root = tmp / "ds"  # the v3 layout: meta/info.json + data/chunk-000/file-000.parquet (here a pickle)
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0"}))
    torch_archive(root / "data" / "chunk-000" / "file-000.parquet", marker)
    return lambda: load_frames(root, 16, progress=False)


def case_pretrained_tower(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.models.pretrained import PretrainedVisionTower

    tower = tmp / "vit"
    tower.mkdir()
    (tower / "config.json").write_text(json.dumps({"model_type": "vit"}))
    torch_archive(tower / "pytorch_model.bin", marker)
    return lambda: PretrainedVisionTower(tower, 32)


def case_bag(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.data.bags.reader import BagReader

    bag = tmp / "bag"
    raw_pickle(bag / "bag_0.mcap", marker)
    return lambda: BagReader(bag)


YAML_PAYLOAD = "!!python/object/apply:pathlib.Path.write_text [!!python/object/apply:pathlib.Path ['{m}'], 'ran']\n"


def case_robot_profile_yaml(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.robots.profiles import parse_profile

    return lambda: parse_profile("name: " + YAML_PAYLOAD.format(m=marker), "evil.yaml")


def case_device_profile_yaml(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.runtime.latency.devices import parse_device

    return lambda: parse_device("name: " + YAML_PAYLOAD.format(m=marker), "evil.yaml")


def case_bringup_params_yaml(tmp: Path, marker: Path) -> Callable[[], object]:
    from wm_vla.bringup import BringupArgs, build_plan

    params = tmp / "params.yaml"
    params.write_text("vla_node:\n  ros__parameters:\n    k: " + YAML_PAYLOAD.format(m=marker))
    return lambda: build_plan(BringupArgs(robot="arm", params_file=str(params)))


CASES: dict[str, tuple[Callable[[Path, Path], Callable[[], object]], type[Exception], str]] = {
    "checkpoint weights": (case_checkpoint_weights, CheckpointError, "is a Python pickle.*never unpickles"),
    "checkpoint with only model.pt": (case_checkpoint_only_pt, CheckpointError, r"found pickled \['model.pt'\]"),
    "candidate-label shard": (case_candidate_label_shard, DatasetFeatureError, "torch.save archive.*never unpickles"),
    "onnx graph": (case_onnx_graph, OnnxModelError, "encoder.onnx is a Python pickle"),
    "tensorrt engine": (case_tensorrt_engine, EngineManifestError, "is a Python pickle, not a TensorRT engine"),
    "lerobot dataset parquet": (case_lerobot_dataset, DatasetFormatError, "torch.save archive.*never unpickles"),
    "pretrained tower": (case_pretrained_tower, CheckpointError, r"found pickled \['pytorch_model.bin'\]"),
    "rosbag": (case_bag, BagOpenError, "cannot open as a ROS 2 bag|not an mcap file"),
    "robot profile yaml": (case_robot_profile_yaml, ProfileError, "invalid YAML.*python/object/apply"),
    "device profile yaml": (case_device_profile_yaml, DeviceProfileError, "invalid YAML.*python/object/apply"),
    "bringup params yaml": (case_bringup_params_yaml, ProfileError, "cannot read the params file.*python/object"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pickle_bearing_file_is_refused_and_its_payload_never_runs(name: str, tmp_path: Path) -> None:
    build, error, match = CASES[name]
    marker = tmp_path / "PAYLOAD_RAN"
    load = build(tmp_path, marker)
    assert not marker.exists()
    with pytest.raises(error, match=match):
        load()
    assert not marker.exists(), f"{name}: the pickle payload was executed"


def test_the_payload_is_live_so_the_refusals_above_mean_something(tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    raw_pickle(tmp_path / "p.pkl", marker)
    assert pickle_kind(tmp_path / "p.pkl") == "a Python pickle"
    pickle.loads((tmp_path / "p.pkl").read_bytes())  # what an unsafe loader would do
    assert marker.read_text() == "payload ran"
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert pickle_kind(tmp_path / "o.npy") is not None
    np.save(tmp_path / "f.npy", np.zeros(3))
    assert pickle_kind(tmp_path / "f.npy") is None
    assert pickle_kind(default_checkpoints()[0] / "model.safetensors") is None
    # a safetensors file whose header is 640 bytes long starts 0x80 0x02, like a protocol-2 pickle: not refused
    from safetensors.torch import load_file, save_file

    for width in range(1, 1000):
        save_file({"x" * width: torch.zeros(1)}, str(tmp_path / "t.safetensors"))
        if (tmp_path / "t.safetensors").read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no key width gave a 0x280-byte safetensors header")
    assert pickle_kind(tmp_path / "t.safetensors") is None and load_file(str(tmp_path / "t.safetensors"))


UNSAFE = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
          ("dill", "loads"), ("joblib", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
          ("jit", "load"), ("cloudpickle", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle")}


def unsafe_calls(path: Path) -> list[str]:
    """Calls in `path` that unpickle: torch.load without weights_only=True, pickle/dill/joblib loads, yaml.load,
    np.load(allow_pickle=True)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        call = (node.func.value.id, node.func.attr)
        kw = {k.arg: k.value for k in node.keywords}
        safe_torch = call == ("torch", "load") and isinstance(kw.get("weights_only"), ast.Constant) \
            and kw["weights_only"].value is True
        numpy_pickle = call[1] == "load" and call[0] in ("np", "numpy") and isinstance(kw.get("allow_pickle"),
                                                                                     ast.Constant) \
            and kw["allow_pickle"].value is True
        if (call in UNSAFE and not safe_torch) or numpy_pickle:
            found.append(f"{path}:{node.lineno}: {call[0]}.{call[1]}")
    return found


def test_no_code_path_unpickles() -> None:
    dirs = ["wm_vla", "node_common", "sim_node", "vla_node", "world_model_node", "perception_node", "bag_player",
            "benchmarks", "scripts", "launch"]
    files = [p for d in dirs for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    assert [hit for f in files for hit in unsafe_calls(f)] == []


def test_lerobot_dataset_loading_code_does_not_unpickle() -> None:
    """What load_dataset runs: lerobot's datasets package (parquet/JSON/video) and HF datasets' parquet reader."""
    lerobot = Path(importlib.util.find_spec("lerobot").origin).parent  # type: ignore[arg-type, union-attr]
    hf = Path(importlib.util.find_spec("datasets").origin).parent  # type: ignore[arg-type, union-attr]
    files = [*(lerobot / "datasets").rglob("*.py"), hf / "io" / "parquet.py",
             hf / "packaged_modules" / "parquet" / "parquet.py", hf / "arrow_dataset.py", hf / "table.py"]
    assert len(files) > 10
    assert [hit for f in files for hit in unsafe_calls(f)] == []


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    src = tmp_path / "probe.py"
    src.write_text("import torch, pickle, numpy as np\ntorch.load('x')\ntorch.load('y', weights_only=True)\n"
                   "pickle.loads(b'')\nnp.load('z', allow_pickle=True)\nnp.load('z')\nyaml.load(s)\n")
    assert [h.split(": ")[1] for h in unsafe_calls(src)] == ["torch.load", "pickle.loads", "np.load", "yaml.load"]
