"""The ONE bringup plan: robot profile -> node specs (executable, parameters, remappings).

`launch/robot.launch.py` maps it to launch_ros actions (system ROS 2); `wm-vla up` runs the same plan as
subprocesses in a pip venv. robot: `arm` | `quadruped` (real robots: drivers and controllers are the user's) or
`sim` / `sim_quadruped` (adds the sim_robot node with the same topics as the real robot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from wm_vla.robots import load_profile
from wm_vla.robots.errors import ProfileError
from wm_vla.teleop.inputs import INPUTS

ROBOTS = {"arm": ("arm", False), "quadruped": ("quadruped", False), "sim": ("arm", True),
          "sim_quadruped": ("quadruped", True)}
SIM_CAMERAS = {"arm": ("front", "wrist"), "quadruped": ("head",)}
POLICY_PREFIX = "/wm_vla/policy"  # with teleop intervention, the policy's command topics live under this prefix


def camera_topic(name: str) -> str:
    """Image topic of sim camera `name` (realsense2_camera style)."""
    return f"/camera/{name}/color/image_raw"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    executable: str                # console script installed in lib/wm_vla (launch_ros `executable`)
    module: str                    # python module with main() (what `wm-vla up` runs)
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False
    package: str = "wm_vla"

    @property
    def external(self) -> bool:
        """A node of another ROS package (e.g. robot_state_publisher): launched by ros2 launch only."""
        return self.package != "wm_vla"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "package": self.package, "executable": self.executable, "module": self.module,
                "parameters": dict(self.parameters), "remappings": [list(r) for r in self.remappings],
                "lifecycle": self.lifecycle}


@dataclass(frozen=True)
class BringupArgs:
    robot: str = "sim"
    backend: str = "torch"
    k: int = 16
    denoise_steps: int = 0          # vla_node: Euler steps per sample (0: the policy config's)
    params_file: str | None = None  # YAML {node_name: {ros__parameters: {...}}} merged over the defaults
    use_sim_time: bool = False
    rank: bool = True
    seed: int = 1_000_000           # sim: first episode seed
    policy: str | None = None
    world_model: str | None = None
    # the policy whose encoder the world model ranks in (vla_node and world_model_node get the same one): None = the
    # shipped world model's encoder when the shipped world model is in use, "none" = the acting policy's latent
    wm_encoder: str | None = None
    tasks: tuple[str, ...] | None = None  # sim task families; None: those in the policy's vocabulary
    rate_scale: float = 1.0         # sim speed vs real time (with use_sim_time the sim publishes /clock)
    record_bag: str = ""            # a directory: record the stack's inputs and outputs there (mcap, bag_recorder)
    teleop: str = ""                # teleop_node input: keyboard | joy | spacemouse | leader ("": no teleop)
    record: str = ""                # recorder_node dataset directory ("": no recorder)
    intervene: bool = False         # with teleop: keep the policy running; teleop takes over and hands back
    record_fps: int = 0             # dataset fps (0: the profile's policy rate)
    teleop_max_linear: float = 0.15  # arm teleop: gripper speed (m/s) at full deflection (teleop_node max_linear)
    command_interface: str = ""     # arm: position_commands | joint_trajectory (world_model_node; "": its default)
    # CPUs of vla_node (and its sampler process); every other node gets the remaining ones (`cpu_affinity` parameter):
    # "auto" = the last usable CPU when there are >= 2, "" / "off" = no pinning, or a CPU list such as "3" or "2-3"
    inference_cpus: str = "auto"


def policy_tasks(world: str, policy: str | None) -> tuple[str, ...]:
    """Sim task families the policy was trained on (from its config's vocabulary); all when unknown."""
    import json

    from wm_vla.sim.tasks import check_families, families_in_vocab
    from wm_vla.training.pipeline import default_checkpoints

    path = Path(policy) if policy else default_checkpoints()[0]
    try:
        vocab = json.loads((path / "config.json").read_text())["config"]["vocab"]
    except (OSError, KeyError, ValueError):
        return check_families(world, None)
    return families_in_vocab(world, vocab) or check_families(world, None)


def _wm_encoder(args: BringupArgs, world: str) -> str:
    """One explicit wm_encoder for both model nodes (a path, or "none"), resolved from `args` once ("none" without
    ranking: vla_node then skips the second encoder pass)."""
    from wm_vla.training.pipeline import NO_ENCODER, is_shipped, resolve_wm_encoder

    if not args.rank:
        return NO_ENCODER
    encoder = resolve_wm_encoder(args.wm_encoder, is_shipped(args.world_model, world), world)
    return str(Path(encoder).resolve()) if encoder else NO_ENCODER


def build_plan(args: BringupArgs) -> list[NodeSpec]:
    """Node specs for `args.robot`; parameter overrides from `args.params_file` applied last."""
    if args.robot not in ROBOTS:
        raise ProfileError(f"unknown robot {args.robot!r}; choose from {', '.join(ROBOTS)}")
    profile_name, sim = ROBOTS[args.robot]
    profile = load_profile(profile_name)
    common: dict[str, Any] = {"robot": profile_name, "use_sim_time": args.use_sim_time}
    models = {"backend": args.backend, **({"policy": args.policy} if args.policy else {})}
    if args.denoise_steps < 0:
        raise ProfileError(f"denoise_steps must be >= 1 (or 0: the policy's own), got {args.denoise_steps}")
    steps = {"denoise_steps": args.denoise_steps} if args.denoise_steps else {}
    nodes = []
    perception: dict[str, Any] = {**common, "source": "topic"}
    if sim:
        cams = SIM_CAMERAS[profile_name]
        tasks = args.tasks or policy_tasks(profile_name, args.policy)
        nodes.append(NodeSpec("sim_robot", "sim_robot", "sim_node.node",
                              {"world": profile_name, "seed": args.seed, "task": ",".join(tasks),
                               "sim_clock": args.use_sim_time, "rate_scale": args.rate_scale}))
        perception.update(camera_names=list(cams), camera_topics=[camera_topic(c) for c in cams])
    else:
        perception.update(camera_names=[c.name for c in profile.cameras], camera_topics=[c.topic for c in profile.cameras])
    if not args.teleop or args.intervene:
        nodes.append(NodeSpec("perception_node", "perception_node", "perception_node.node", perception))
        encoder = {"wm_encoder": _wm_encoder(args, profile_name)}
        vla = {**common, **models, "k": args.k, **steps, **encoder}
        nodes.append(NodeSpec("vla_node", "vla_node", "vla_node.node", vla, lifecycle=True))
        wm = {**common, **models, **encoder, "rank": args.rank,
              **({"world_model": args.world_model} if args.world_model else {}),
              **({"command_interface": args.command_interface} if args.command_interface else {})}
        remap = tuple((c.topic, POLICY_PREFIX + c.topic) for c in profile.controllers.values()) if args.teleop else ()
        nodes.append(NodeSpec("world_model_node", "world_model_node", "world_model_node.node", wm, remap,
                              lifecycle=True))
    nodes += teleop_record_nodes(args, common, perception)
    nodes.append(NodeSpec("robot_state_publisher", "robot_state_publisher", "", {
        "robot_description": profile.urdf_path().read_text(), "use_sim_time": args.use_sim_time},
        package="robot_state_publisher"))
    if args.record_bag:
        nodes.append(NodeSpec("bag_recorder", "bag_recorder", "bag_player.record",
                              {**common, "sim": sim, "out": str(Path(args.record_bag).resolve())}))
    nodes = _pin_inference(nodes, args.inference_cpus)
    if args.params_file:
        nodes = _override(nodes, Path(args.params_file))
    return nodes


def _pin_inference(nodes: list[NodeSpec], spec: str) -> list[NodeSpec]:
    """Every wm_vla node's `cpu_affinity`: vla_node's CPUs from `spec`, the rest for the others (none: unchanged)."""
    from wm_vla.cpus import CpuAffinityError, inference_split

    try:
        split = inference_split(spec)
    except CpuAffinityError as exc:
        raise ProfileError(f"inference_cpus: {exc}") from exc
    if split is None or not any(n.name == "vla_node" for n in nodes):
        return nodes
    inference, others = split
    return [n if n.external else replace(n, parameters={**n.parameters, "cpu_affinity":
                                                          inference if n.name == "vla_node" else others})
            for n in nodes]


def teleop_record_nodes(args: BringupArgs, common: dict[str, Any], perception: dict[str, Any]) -> list[NodeSpec]:
    """teleop_node (the policy's command topics; with `intervene` the policy's own commands come in under
    POLICY_PREFIX and pass through while the operator is idle) and recorder_node (the cameras perception uses)."""
    nodes = []
    if args.teleop:
        if args.teleop not in INPUTS:
            raise ProfileError(f"unknown teleop input {args.teleop!r}; choose from {', '.join(INPUTS)}")
        if not 0.0 < args.teleop_max_linear <= 1.0:
            raise ProfileError(f"teleop_max_linear must be in (0, 1] m/s, got {args.teleop_max_linear}")
        nodes.append(NodeSpec("teleop_node", "teleop_node", "teleop_node.node", {
            **common, "input": args.teleop, "policy_prefix": POLICY_PREFIX if args.intervene else "",
            "max_linear": float(args.teleop_max_linear)}))
    if args.record:
        rec = {**common, "root": str(Path(args.record).expanduser().resolve()),
               "camera_names": perception["camera_names"], "camera_topics": perception["camera_topics"],
               "fps": args.record_fps}
        if ROBOTS[args.robot][1]:
            rec["status_topic"] = "/sim/status"  # a finished sim episode is saved
        nodes.append(NodeSpec("recorder_node", "recorder_node", "recorder_node.node", rec))
    return nodes


def bringup_args(values: Mapping[str, str]) -> BringupArgs:
    """BringupArgs from launch-style string arguments (robot, backend, k, params_file, use_sim_time, ...)."""
    known = {f.name: f for f in fields(BringupArgs)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ProfileError(f"unknown bringup argument(s) {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for name, text in values.items():
        default = getattr(BringupArgs(), name)
        if text in ("", None):
            continue
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ProfileError(f"{name} must be true or false, got {text!r}")
            out[name] = text.lower() in ("true", "1")
        elif isinstance(default, (int, float)):
            try:
                out[name] = type(default)(text)
            except ValueError:
                raise ProfileError(f"{name} must be {'an integer' if isinstance(default, int) else 'a number'}, "
                                   f"got {text!r}") from None
        elif name == "tasks":
            out[name] = tuple(t for t in text.split(",") if t)
        else:
            out[name] = text
    return BringupArgs(**out)


def _override(nodes: list[NodeSpec], path: Path) -> list[NodeSpec]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read the params file: {exc}") from exc
    known = {n.name for n in nodes}
    unknown = sorted(set(data) - known)
    if unknown or not all(isinstance(v, dict) and isinstance(v.get("ros__parameters", {}), dict)
                          for v in data.values()):
        raise ProfileError(f"{path}: expected {{node: {{ros__parameters: {{...}}}}}} for nodes {sorted(known)}, "
                           f"unknown: {unknown}")
    return [NodeSpec(n.name, n.executable, n.module, {**n.parameters, **data.get(n.name, {}).get("ros__parameters", {})},
                     n.remappings, n.lifecycle, n.package) for n in nodes]


def ros_args(spec: NodeSpec, params_path: Path) -> list[str]:
    """Command-line `--ros-args` of one node (name, params file, remappings): what launch_ros also passes."""
    out = ["--ros-args", "-r", f"__node:={spec.name}", "--params-file", str(params_path)]
    for src, dst in spec.remappings:
        out += ["-r", f"{src}:={dst}"]
    return out


def params_yaml(spec: NodeSpec) -> str:
    return yaml.safe_dump({spec.name: {"ros__parameters": spec.parameters}}, sort_keys=True)
