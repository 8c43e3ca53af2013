"""Bad model files over the real ROS stack: vla_node / world_model_node given a missing, corrupt or mismatched
checkpoint, or an ONNX export of another policy (or settings they cannot honour: GPC-OPT without gradients, an
unknown command interface), refuse to configure: the process exits non-zero with the reason
in its log and on /diagnostics (ERROR), while a healthy world_model_node keeps the arm holding, never zeros."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from node_common.msgs import COMMAND_QOS, SENSOR_QOS
from ros_stack_helpers import Feeder, Probe, statuses
from sim_node.episodes import lineage_ns
from wm_vla.bringup import NodeSpec
from wm_vla.launcher import Stack
from wm_vla.models.checkpoint import read_meta
from wm_vla.models.config import PolicyConfig, from_dict
from wm_vla.robots import load_profile
from wm_vla.runtime.spec import ModelSpec
from wm_vla.training.pipeline import default_checkpoints, default_wm_encoder

pytestmark = pytest.mark.ros
ARM = load_profile("arm")
NAMES = list(ARM.action.names)
HOME = np.array([0.0, -0.5, 1.2, 0.0, 0.9, 0.0, 0.0])
FORWARD = ARM.controllers["forward"].topic


def _corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 3])   # a truncated copy
    return dst


def _foreign_export(root: Path) -> Path:
    """An export.json of the QUADRUPED policy (its spec and graph hashes) beside the arm's checkpoint."""
    quad = default_checkpoints(world="quadruped")[0]
    out = root / "onnx_quadruped"
    out.mkdir()
    graphs = {}
    for name in ("encoder", "sampler"):
        (out / f"{name}.onnx").write_bytes(b"graph of the quadruped policy")
        graphs[name] = {"file": f"{name}.onnx", "sha256": hashlib.sha256(b"graph of the quadruped policy").hexdigest()}
    spec = ModelSpec.from_policy_config(from_dict(PolicyConfig, read_meta(quad)["config"]), None, False)
    (out / "export.json").write_text(json.dumps({"format_version": 1, "spec": spec.to_json(), "graphs": graphs}))
    return out


def _foreign_latent(src: Path, dst: Path) -> Path:
    """The student, saying it was trained in the latent of an encoder no shipped policy has (another digest)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["extra"]["encoder_digest"] = "0" * 64
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


BAD = {  # node name -> (module, parameters, expected reason in the log and the ERROR diagnostic)
    "vla_missing": ("vla_node", {"policy": "/nonexistent/policy"}, "does not exist"),
    "vla_corrupt": ("vla_node", {"policy": "{corrupt}"}, "not a readable safetensors file"),
    "vla_dims": ("vla_node", {"policy": "{quad_policy}"}, "does not fit robot arm"),
    "vla_onnx": ("vla_node", {"backend": "onnxruntime", "onnx_dir": "{export}"}, "does not match the checkpoint"),
    "vla_steps": ("vla_node", {"denoise_steps": -1}, "steps must be a positive integer"),
    "vla_wm_encoder": ("vla_node", {"wm_encoder": "/nonexistent/encoder"}, "does not exist"),
    # a copy is no longer the shipped student: it gets the shipped encoder it was trained in explicitly
    "wm_corrupt": ("world_model_node", {"world_model": "{corrupt_wm}", "wm_encoder": "{encoder}"},
                   "not a readable safetensors file"),
    "wm_mismatch": ("world_model_node", {"world_model": "{quad_student}"}, "does not fit the policy"),
    # a world model trained in another encoder's latent than the one it would be given
    "wm_foreign_latent": ("world_model_node", {"world_model": "{foreign_student}", "wm_encoder": "none"},
                          "trained in the latent of another policy's encoder"),
    # configurations the node cannot honour: refused before any model is loaded
    "wm_gpc_opt_ort": ("world_model_node", {"backend": "onnxruntime", "gpc_opt": True}, "gpc_opt needs rank: true and"
                       " backend ['torch']"),
    "wm_gpc_opt_unranked": ("world_model_node", {"rank": False, "gpc_opt": True}, "got rank: false"),
    "wm_interface": ("world_model_node", {"rank": False, "command_interface": "jtc"}, "command_interface 'jtc' is not"),
}


class Refusals:
    def __init__(self, probe: Probe, stack: Stack, diag: object, forward: object) -> None:
        self.probe, self.stack, self.diag, self.forward = probe, stack, diag, forward


@pytest.fixture(scope="module")
def refusals(ros_domain: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refusals]:
    root = tmp_path_factory.mktemp("bad_models")
    policy, student = default_checkpoints()
    paths = {"corrupt": str(_corrupt(policy, root / "policy_corrupt")),
             "corrupt_wm": str(_corrupt(student, root / "student_corrupt")), "export": str(_foreign_export(root)),
             "quad_policy": str(default_checkpoints(world="quadruped")[0]),
             "quad_student": str(default_checkpoints(world="quadruped")[1]),
             "foreign_student": str(_foreign_latent(student, root / "student_foreign")),
             "encoder": str(default_wm_encoder() or "none")}
    plan = [NodeSpec(name, module, f"{module}.node",
                     {"robot": "arm", **{k: v.format(**paths) if isinstance(v, str) else v
                                         for k, v in params.items()}}, lifecycle=True)
            for name, (module, params, _) in BAD.items()]
    plan.append(NodeSpec("world_model_node", "world_model_node", "world_model_node.node",
                         {"robot": "arm", "rank": False}, lifecycle=True))
    probe = Probe()
    # every refusing node publishes 6 ERROR arrays, almost at once: a depth below their sum lets a CPU-starved probe
    # lose the first refusals (unkeyed topic: one KEEP_LAST history shared by all writers)
    diag = probe.record(DiagnosticArray, "/diagnostics", 500)
    forward = probe.record(Float64MultiArray, FORWARD, COMMAND_QOS)
    js_pub = probe.node.create_publisher(JointState, ARM.topics.joint_states, SENSOR_QOS)

    def robot() -> None:
        js = JointState(name=[*NAMES, "finger_right_joint"], position=[*map(float, HOME), float(HOME[-1])])
        js.header.stamp = probe.node.get_clock().now().to_msg()
        js_pub.publish(js)

    feeder = Feeder(robot, 50.0)
    try:
        with Stack(plan, log_dir=root / "logs") as stack:
            probe.wait(lambda: set(BAD) <= set(stack.failed()), 180.0, "every misconfigured node to exit")
            yield Refusals(probe, stack, diag, forward)
    finally:
        feeder.stop()
        probe.close()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_model_files_node_refuses_to_configure_with_a_clear_error(refusals: Refusals, name: str) -> None:
    reason = BAD[name][2]
    assert refusals.stack.failed()[name] != 0
    log = refusals.stack.log(name)
    assert "configure failed" in log and reason in log, log[-2000:]
    errors = [s for s in statuses(refusals.diag, name) if s.level == DiagnosticStatus.ERROR]
    assert errors and reason in errors[0].message, "the reason is on /diagnostics at ERROR level"
    t0 = refusals.probe.now()   # meanwhile the robot holds: the healthy world_model_node streams holds, never zeros
    refusals.probe.wait(lambda: len(refusals.forward.since(t0)) >= 5, 10.0, "hold commands")
    assert all(lineage_ns(m) == 0 and np.allclose(m.data, HOME[:6]) for _, m in refusals.forward.since(t0))
