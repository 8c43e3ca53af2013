"""Robot profiles: typed, validated YAML descriptions of a robot and its ROS interfaces.

``load_profile("arm")`` reads ``config/robots/arm.yaml`` under :func:`data_root`; a path loads
that file. A profile's ``urdf`` is absolute or relative to :func:`data_root`. Conventions:

* arm ``joint_position`` actions/states name URDF joints; exactly one of ``gripper_joints`` is in
  the action (the commanded one), the other gripper joints follow its value.
* quadruped ``body_velocity`` actions name body-frame twist components (vx, vy, vz, wx, wy, wz);
  ``odometry`` states name pose/twist components of the odometry topic.
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ProfileError, UrdfError
from .urdf import RobotModel, load_urdf

ROBOT_KINDS = ("arm", "quadruped")
ACTION_KINDS = {"arm": "joint_position", "quadruped": "body_velocity"}
STATE_KINDS = ("joint_position", "odometry")
CONTROLLER_INTERFACES = ("joint_trajectory", "position_commands", "twist")
BODY_VELOCITY_NAMES = ("vx", "vy", "vz", "wx", "wy", "wz")
ODOMETRY_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", *BODY_VELOCITY_NAMES)
MIN_TWIST_RATE_HZ = 20.0  # cmd_vel must be republished at least this often (DESIGN.md §3)


@dataclass(frozen=True)
class ActionSpace:
    """Policy action vector: ``names[i]`` is bounded by ``[low[i], high[i]]``."""

    kind: str
    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclass(frozen=True)
class StateSpace:
    """Proprioceptive state vector fed to the policy."""

    kind: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class ControllerSpec:
    """A robot-facing command stream: a ros2_control controller or a cmd_vel consumer.

    ``joints`` gives the message order for joint interfaces; ``stamped`` selects TwistStamped.
    """

    name: str
    interface: str
    topic: str
    joints: tuple[str, ...] = ()
    stamped: bool = False


@dataclass(frozen=True)
class Topics:
    """Input topics (commands go through :class:`ControllerSpec`)."""

    joint_states: str
    instruction: str
    e_stop: str
    odometry: str | None = None


@dataclass(frozen=True)
class CameraSpec:
    """A camera image stream and its optical frame in the URDF."""

    name: str
    topic: str
    frame: str
    width: int
    height: int


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box (metres, in ``frame``) the tool link must stay inside."""

    frame: str
    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class RobotProfile:
    """Everything the stack needs to know about one robot; see the module docstring."""

    name: str
    kind: str
    urdf: str
    base_link: str
    tool_link: str | None = None
    arm_joints: tuple[str, ...] = ()
    gripper_joints: tuple[str, ...] = ()
    leg_joints: tuple[str, ...] = ()
    action: ActionSpace
    state: StateSpace
    control_rate_hz: float
    policy_rate_hz: float
    max_obs_age_ms: float
    controllers: Mapping[str, ControllerSpec]
    topics: Topics
    cameras: tuple[CameraSpec, ...]
    workspace: Workspace | None = None

    def urdf_path(self) -> Path:
        """Absolute path of the URDF."""
        path = Path(self.urdf)
        return path if path.is_absolute() else data_root() / path

    def load_model(self) -> RobotModel:
        """Parse the profile's URDF."""
        return load_urdf(self.urdf_path())

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready dict; fields left at their defaults are omitted."""
        return _plain(self)

    def to_yaml(self) -> str:
        """YAML text that :func:`parse_profile` reads back to an equal profile."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def data_root() -> Path:
    """Directory holding ``config/`` and ``urdf/``: the checkout, or an install's share/wm_vla."""
    for parent in Path(__file__).resolve().parents:
        for candidate in (parent, parent / "share" / "wm_vla"):
            if (candidate / "config" / "robots").is_dir():
                return candidate
    raise ProfileError(f"no config/robots directory found above {Path(__file__).resolve().parent}")


def load_profile(name_or_path: str | os.PathLike[str]) -> RobotProfile:
    """Load a profile by name (``config/robots/<name>.yaml``) or from a YAML file path."""
    text = os.fspath(name_or_path)
    is_name = Path(text).suffix == "" and os.sep not in text and "/" not in text
    path = data_root() / "config" / "robots" / f"{text}.yaml" if is_name else Path(text)
    if is_name and not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ProfileError(f"{path}: no robot profile '{text}' (known: {known})")
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read robot profile: {exc.strerror or exc}") from exc
    return parse_profile(content, source=str(path))


def parse_profile(text: str, source: str = "<string>") -> RobotProfile:
    """Parse and validate profile YAML text against its URDF; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: invalid YAML: {exc}") from exc
    profile = _build(RobotProfile, data, "", source)
    try:
        model = profile.load_model()
    except UrdfError as exc:
        raise ProfileError(f"{source}: urdf: {exc}") from exc
    _Validator(profile, model, source).run()
    return profile


def _build(cls: type, data: object, where: str, source: str) -> Any:
    """Instantiate dataclass ``cls`` from a YAML mapping, checking keys and value types."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: {where or 'top level'}: expected a mapping, got {data!r}")
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared), key=str)
    if unknown:
        raise ProfileError(
            f"{source}: {where or 'top level'}: unknown key(s) {unknown}; "
            f"allowed: {sorted(declared)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, spec in declared.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], path, source)
        elif spec.default is MISSING:
            raise ProfileError(f"{source}: {path}: required field is missing")
    return cls(**kwargs)


def _convert(hint: Any, value: object, where: str, source: str) -> Any:
    """Check ``value`` against type ``hint`` and convert lists to tuples, mappings to read-only."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, source)
    if isinstance(hint, type) and is_dataclass(hint):
        return _build(hint, value, where, source)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{source}: {where}: expected a list, got {value!r}")
        return tuple(_convert(args[0], v, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, Mapping) or not value:
            raise ProfileError(f"{source}: {where}: expected a non-empty mapping, got {value!r}")
        return types.MappingProxyType(
            {str(k): _convert(args[1], v, f"{where}.{k}", source) for k, v in value.items()}
        )
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (
        hint is float
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    ):
        return float(value)
    if hint is str and isinstance(value, str) and value:
        return value
    expected = getattr(hint, "__name__", hint)
    raise ProfileError(f"{source}: {where}: expected {expected}, got {value!r}")


def _plain(value: Any) -> Any:
    """Dataclasses to dicts (fields at their default omitted), tuples to lists, recursively."""
    if is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in fields(value)
            if f.default is MISSING or getattr(value, f.name) != f.default
        }
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _Validator:
    """Cross-field checks of a structurally valid profile against its URDF."""

    def __init__(self, profile: RobotProfile, model: RobotModel, source: str) -> None:
        self.p, self.model, self.source = profile, model, source

    def fail(self, where: str, message: str) -> typing.NoReturn:
        raise ProfileError(f"{self.source}: {where}: {message}")

    def run(self) -> None:
        p = self.p
        self.choice("kind", p.kind, ROBOT_KINDS)
        self.link("base_link", p.base_link)
        if p.kind == "arm":
            self.arm()
        else:
            self.quadruped()
        self.action()
        self.state()
        self.rates()
        self.controllers()
        for name, topic in vars(p.topics).items():
            if topic is not None:
                self.topic(f"topics.{name}", topic)
        self.cameras()
        if p.workspace is not None:
            self.workspace(p.workspace)

    def arm(self) -> None:
        p = self.p
        if p.tool_link is None:
            self.fail("tool_link", "required for kind 'arm'")
        self.link("tool_link", p.tool_link)
        if not p.arm_joints:
            self.fail("arm_joints", "required for kind 'arm'")
        self.joints("arm_joints", p.arm_joints)
        self.joints("gripper_joints", p.gripper_joints)
        if p.leg_joints:
            self.fail("leg_joints", "not allowed for kind 'arm'")
        if p.workspace is None:
            self.fail("workspace", "required for kind 'arm'")

    def quadruped(self) -> None:
        p = self.p
        if not p.leg_joints:
            self.fail("leg_joints", "required for kind 'quadruped'")
        self.joints("leg_joints", p.leg_joints)
        for name in ("tool_link", "arm_joints", "gripper_joints", "workspace"):
            if getattr(p, name):
                self.fail(name, "not allowed for kind 'quadruped'")

    def action(self) -> None:
        a = self.p.action
        self.choice("action.kind", a.kind, (ACTION_KINDS[self.p.kind],))
        self.names("action.names", a.names)
        for key in ("low", "high"):
            if len(getattr(a, key)) != len(a.names):
                self.fail(
                    f"action.{key}",
                    f"has {len(getattr(a, key))} values for {len(a.names)} action names",
                )
        for i, (lo, hi) in enumerate(zip(a.low, a.high, strict=True)):
            if not lo < hi:
                self.fail(f"action.low[{i}]", f"{lo} is not below action.high[{i}] = {hi}")
        if a.kind == "body_velocity":
            for i, name in enumerate(a.names):
                self.choice(f"action.names[{i}]", name, BODY_VELOCITY_NAMES)
            return
        self.joints("action.names", a.names)
        commandable = set(self.p.arm_joints) | set(self.p.gripper_joints)
        for i, name in enumerate(a.names):
            if name not in commandable:
                self.fail(f"action.names[{i}]", f"'{name}' is not in arm_joints or gripper_joints")
        gripper = self.p.gripper_joints
        if gripper and len(set(a.names) & set(gripper)) != 1:
            self.fail("action.names", f"must contain exactly one of gripper_joints {list(gripper)}")
        limits = self.model.joint_limits(a.names)
        for i, name in enumerate(a.names):
            if a.low[i] < limits.lower[i] or a.high[i] > limits.upper[i]:
                self.fail(
                    f"action.low/high[{i}]",
                    f"[{a.low[i]}, {a.high[i]}] exceeds the URDF limits "
                    f"[{limits.lower[i]}, {limits.upper[i]}] of joint '{name}'",
                )

    def state(self) -> None:
        s = self.p.state
        self.choice("state.kind", s.kind, STATE_KINDS)
        self.names("state.names", s.names)
        if s.kind == "joint_position":
            self.joints("state.names", s.names)
            return
        for i, name in enumerate(s.names):
            self.choice(f"state.names[{i}]", name, ODOMETRY_NAMES)
        if self.p.topics.odometry is None:
            self.fail("topics.odometry", "required when state.kind is 'odometry'")

    def rates(self) -> None:
        p = self.p
        for key in ("control_rate_hz", "policy_rate_hz", "max_obs_age_ms"):
            if getattr(p, key) <= 0:
                self.fail(key, f"must be positive, got {getattr(p, key)}")
        if p.policy_rate_hz > p.control_rate_hz:
            self.fail(
                "policy_rate_hz", f"{p.policy_rate_hz} exceeds control_rate_hz {p.control_rate_hz}"
            )
        if p.action.kind == "body_velocity" and p.control_rate_hz < MIN_TWIST_RATE_HZ:
            self.fail("control_rate_hz", f"velocity commands need at least {MIN_TWIST_RATE_HZ} Hz")

    def controllers(self) -> None:
        commanded: set[str] = set()
        twist = False
        for role, c in self.p.controllers.items():
            where = f"controllers.{role}"
            self.choice(f"{where}.interface", c.interface, CONTROLLER_INTERFACES)
            self.topic(f"{where}.topic", c.topic)
            if c.interface == "twist":
                twist = True
                if c.joints:
                    self.fail(f"{where}.joints", "a twist controller commands no joints")
                continue
            if c.stamped:
                self.fail(f"{where}.stamped", "only applies to interface 'twist'")
            if not c.joints:
                self.fail(f"{where}.joints", f"required for interface '{c.interface}'")
            self.joints(f"{where}.joints", c.joints)
            commanded |= set(c.joints)
        if self.p.action.kind == "body_velocity" and not twist:
            self.fail("controllers", "a body_velocity action needs an interface 'twist' controller")
        targets = set(self.p.action.names) if self.p.action.kind == "joint_position" else set()
        if targets & set(self.p.gripper_joints):
            targets |= set(self.p.gripper_joints)
        uncommanded = sorted(targets - commanded)
        if uncommanded:
            self.fail("controllers", f"no controller commands joint(s) {uncommanded}")

    def cameras(self) -> None:
        self.names("cameras", tuple(c.name for c in self.p.cameras))
        for i, cam in enumerate(self.p.cameras):
            self.topic(f"cameras[{i}].topic", cam.topic)
            self.link(f"cameras[{i}].frame", cam.frame)
            if cam.width <= 0 or cam.height <= 0:
                self.fail(f"cameras[{i}]", f"image size {cam.width}x{cam.height} must be positive")

    def workspace(self, ws: Workspace) -> None:
        self.link("workspace.frame", ws.frame)
        for key in ("low", "high"):
            if len(getattr(ws, key)) != 3:
                self.fail(f"workspace.{key}", "must have 3 values (x, y, z)")
        for i, (lo, hi) in enumerate(zip(ws.low, ws.high, strict=True)):
            if not lo < hi:
                self.fail(f"workspace.low[{i}]", f"{lo} is not below workspace.high[{i}] = {hi}")

    def choice(self, where: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            self.fail(where, f"'{value}' is not one of {list(allowed)}")

    def names(self, where: str, names: tuple[str, ...]) -> None:
        if not names:
            self.fail(where, "must not be empty")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            self.fail(where, f"duplicate name(s) {duplicates}")

    def joints(self, where: str, names: tuple[str, ...]) -> None:
        movable = set(self.model.movable_joints)
        for i, name in enumerate(names):
            if name not in movable:
                self.fail(
                    f"{where}[{i}]",
                    f"'{name}' is not a movable joint of URDF '{self.model.name}' ({self.p.urdf})",
                )

    def link(self, where: str, name: str) -> None:
        if name not in self.model.links:
            self.fail(where, f"'{name}' is not a link of URDF '{self.model.name}' ({self.p.urdf})")

    def topic(self, where: str, topic: str) -> None:
        if not topic.startswith("/"):
            self.fail(where, f"topic '{topic}' must be absolute (start with '/')")
