"""Strict URDF parsing (stdlib ElementTree) into frozen dataclasses.

Supported joint types: revolute, continuous, prismatic, fixed. Every problem raises
:class:`UrdfError` naming the source, the joint or link, and what is wrong.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import numpy as np

from .errors import KinematicsError, UrdfError

Vec3 = tuple[float, float, float]
JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed")
_BOUNDED = ("revolute", "prismatic")
_INERTIA_KEYS = ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")


@dataclass(frozen=True)
class Joint:
    """A URDF joint. ``axis`` is a unit vector in the joint frame; limits are SI units.

    ``lower``/``upper`` are +-inf for continuous joints; limits are None for fixed joints.
    """

    name: str
    type: str
    parent: str
    child: str
    origin_xyz: Vec3
    origin_rpy: Vec3
    axis: Vec3
    lower: float | None
    upper: float | None
    velocity: float | None
    effort: float | None
    damping: float

    @property
    def movable(self) -> bool:
        return self.type != "fixed"


@dataclass(frozen=True)
class Link:
    """A URDF link: mass and inertia (ixx, ixy, ixz, iyy, iyz, izz) about the inertial origin."""

    name: str
    mass: float
    inertial_xyz: Vec3
    inertial_rpy: Vec3
    inertia: tuple[float, float, float, float, float, float]

    def inertia_matrix(self) -> np.ndarray:
        """Symmetric 3x3 inertia tensor in the inertial frame."""
        ixx, ixy, ixz, iyy, iyz, izz = self.inertia
        return np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])


_Named = TypeVar("_Named", Link, Joint)


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Limits of an ordered joint list as read-only arrays (lower/upper are +-inf if unbounded)."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True, eq=False)
class RobotModel:
    """A validated kinematic tree. ``joints`` is ordered parents-before-children (depth first)."""

    name: str
    source: str
    root_link: str
    links: Mapping[str, Link]
    joints: Mapping[str, Joint]
    _parent_joint: Mapping[str, Joint] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_parent_joint", MappingProxyType({j.child: j for j in self.joints.values()})
        )

    @property
    def movable_joints(self) -> tuple[str, ...]:
        """Names of all non-fixed joints, in tree order."""
        return tuple(name for name, joint in self.joints.items() if joint.movable)

    def chain(self, from_link: str, to_link: str) -> tuple[Joint, ...]:
        """Joints (fixed included) leading from ``from_link`` down to its descendant ``to_link``."""
        for link in (from_link, to_link):
            if link not in self.links:
                raise KinematicsError(f"robot '{self.name}' has no link '{link}'")
        joints: list[Joint] = []
        link = to_link
        while link != from_link:
            joint = self._parent_joint.get(link)
            if joint is None:
                raise KinematicsError(
                    f"robot '{self.name}': link '{from_link}' is not an ancestor of '{to_link}'"
                )
            joints.append(joint)
            link = joint.parent
        return tuple(reversed(joints))

    def joint_limits(self, joints: Sequence[str] | None = None) -> JointLimits:
        """Limits of ``joints`` (default: all movable joints) in the given order."""
        names = tuple(self.movable_joints if joints is None else joints)
        rows = []
        for name in names:
            joint = self.joints.get(name)
            if joint is None or not joint.movable:
                raise KinematicsError(f"robot '{self.name}' has no movable joint '{name}'")
            rows.append((joint.lower, joint.upper, joint.velocity, joint.effort))
        table = np.array(rows, dtype=float).reshape(len(names), 4).T.copy()
        table.setflags(write=False)
        return JointLimits(names, table[0], table[1], table[2], table[3])


def load_urdf(path: str | os.PathLike[str]) -> RobotModel:
    """Parse the URDF file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UrdfError(f"{path}: cannot read URDF file: {exc.strerror or exc}") from exc
    return parse_urdf(data, source=str(path))


def parse_urdf(text: str | bytes, source: str = "<string>") -> RobotModel:
    """Parse URDF XML text; ``source`` names it in error messages."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UrdfError(f"{source}: malformed XML: {exc}") from exc
    if root.tag != "robot":
        raise UrdfError(f"{source}: root element is <{root.tag}>, expected <robot>")
    name = root.get("name")
    if not name:
        raise UrdfError(f"{source}: <robot> has no 'name' attribute")
    links = _unique([_parse_link(el, source) for el in root.findall("link")], "link", source)
    joints = _unique([_parse_joint(el, source) for el in root.findall("joint")], "joint", source)
    if not links:
        raise UrdfError(f"{source}: robot '{name}' has no <link>")
    root_link, ordered = _tree_order(links, joints, source)
    return RobotModel(
        name=name,
        source=source,
        root_link=root_link,
        links=MappingProxyType(links),
        joints=MappingProxyType({j.name: j for j in ordered}),
    )


def _unique(items: list[_Named], kind: str, source: str) -> dict[str, _Named]:
    out: dict[str, _Named] = {}
    for item in items:
        if item.name in out:
            raise UrdfError(f"{source}: {kind} '{item.name}' is defined twice")
        out[item.name] = item
    return out


def _tree_order(
    links: dict[str, Link], joints: dict[str, Joint], source: str
) -> tuple[str, list[Joint]]:
    """Check the link/joint graph is one tree; return its root and depth-first joint order."""
    parent_of: dict[str, Joint] = {}
    children: dict[str, list[Joint]] = {name: [] for name in links}
    for joint in joints.values():
        for role, link in (("parent", joint.parent), ("child", joint.child)):
            if link not in links:
                raise UrdfError(
                    f"{source}: joint '{joint.name}': {role} link '{link}' is not defined"
                )
        if joint.child in parent_of:
            raise UrdfError(
                f"{source}: link '{joint.child}' is the child of two joints: "
                f"'{parent_of[joint.child].name}' and '{joint.name}'"
            )
        parent_of[joint.child] = joint
        children[joint.parent].append(joint)
    roots = [name for name in links if name not in parent_of]
    if len(roots) > 1:
        raise UrdfError(f"{source}: multiple root links {roots}; the links must form one tree")
    if not roots:
        raise UrdfError(f"{source}: no root link; the joints form a cycle")
    ordered: list[Joint] = []
    stack = list(reversed(children[roots[0]]))
    while stack:
        joint = stack.pop()
        ordered.append(joint)
        stack.extend(reversed(children[joint.child]))
    if len(ordered) != len(joints):
        cyclic = sorted(set(joints) - {j.name for j in ordered})
        raise UrdfError(
            f"{source}: joints {cyclic} form a cycle unreachable from root link '{roots[0]}'"
        )
    return roots[0], ordered


def _parse_link(el: ET.Element, source: str) -> Link:
    name = _required_attr(el, "name", source, "<link>")
    where = f"link '{name}'"
    inertial = el.find("inertial")
    if inertial is None:
        return Link(name, 0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0,) * 6)
    xyz, rpy = _origin(inertial, source, where)
    mass_el = _required_child(inertial, "mass", source, where)
    (mass,) = _numbers(mass_el, "value", 1, source, where)
    if mass < 0:
        raise UrdfError(f"{source}: {where}: negative mass {mass}")
    inertia_el = _required_child(inertial, "inertia", source, where)
    ixx, ixy, ixz, iyy, iyz, izz = (
        _numbers(inertia_el, key, 1, source, where)[0] for key in _INERTIA_KEYS
    )
    return Link(name, mass, xyz, rpy, (ixx, ixy, ixz, iyy, iyz, izz))


def _parse_joint(el: ET.Element, source: str) -> Joint:
    name = _required_attr(el, "name", source, "<joint>")
    where = f"joint '{name}'"
    jtype = _required_attr(el, "type", source, where)
    if jtype not in JOINT_TYPES:
        raise UrdfError(f"{source}: {where}: unsupported type '{jtype}' (supported: {JOINT_TYPES})")
    parent = _required_attr(_required_child(el, "parent", source, where), "link", source, where)
    child = _required_attr(_required_child(el, "child", source, where), "link", source, where)
    if parent == child:
        raise UrdfError(f"{source}: {where}: parent and child are both '{parent}' (a cycle)")
    xyz, rpy = _origin(el, source, where)
    if jtype == "fixed":
        x_axis = (1.0, 0.0, 0.0)
        return Joint(name, jtype, parent, child, xyz, rpy, x_axis, None, None, None, None, 0.0)

    axis_el = el.find("axis")
    ax, ay, az = (1.0, 0.0, 0.0) if axis_el is None else _numbers(axis_el, "xyz", 3, source, where)
    norm = math.sqrt(ax * ax + ay * ay + az * az)
    if norm < 1e-9:
        raise UrdfError(f"{source}: {where}: <axis xyz> is the zero vector")
    axis = (ax / norm, ay / norm, az / norm)

    limit = el.find("limit")
    if limit is None:
        needed = "lower, upper, velocity, effort" if jtype in _BOUNDED else "velocity, effort"
        raise UrdfError(f"{source}: {where} ({jtype}) has no <limit> (needs {needed})")
    (velocity,) = _numbers(limit, "velocity", 1, source, where)
    (effort,) = _numbers(limit, "effort", 1, source, where)
    if velocity <= 0 or effort < 0:
        raise UrdfError(
            f"{source}: {where}: <limit> needs velocity > 0 and effort >= 0, "
            f"got velocity={velocity}, effort={effort}"
        )
    lower, upper = -math.inf, math.inf
    if jtype in _BOUNDED:
        (lower,) = _numbers(limit, "lower", 1, source, where)
        (upper,) = _numbers(limit, "upper", 1, source, where)
        if lower > upper:
            raise UrdfError(f"{source}: {where}: <limit> lower {lower} > upper {upper}")
    damping = 0.0
    dynamics = el.find("dynamics")
    if dynamics is not None and dynamics.get("damping") is not None:
        (damping,) = _numbers(dynamics, "damping", 1, source, where)
    return Joint(
        name, jtype, parent, child, xyz, rpy, axis, lower, upper, velocity, effort, damping
    )


def _origin(el: ET.Element, source: str, where: str) -> tuple[Vec3, Vec3]:
    origin = el.find("origin")
    if origin is None:
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    return _vec3(origin, "xyz", source, where), _vec3(origin, "rpy", source, where)


def _vec3(el: ET.Element, attr: str, source: str, where: str) -> Vec3:
    """Three floats from ``attr`` (URDF default "0 0 0" when absent)."""
    x, y, z = _numbers(el, attr, 3, source, where, default="0 0 0")
    return x, y, z


def _numbers(
    el: ET.Element, attr: str, count: int, source: str, where: str, default: str | None = None
) -> tuple[float, ...]:
    """``count`` finite floats from attribute ``attr`` of ``el``."""
    raw = el.get(attr, default)
    if raw is None:
        raise UrdfError(f"{source}: {where}: <{el.tag}> is missing attribute '{attr}'")
    try:
        values = tuple(float(part) for part in raw.split())
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise UrdfError(
            f'{source}: {where}: <{el.tag} {attr}="{raw}"> must be {count} finite number(s)'
        )
    return values


def _required_attr(el: ET.Element, attr: str, source: str, where: str) -> str:
    value = el.get(attr)
    if not value:
        raise UrdfError(f"{source}: {where}: <{el.tag}> is missing attribute '{attr}'")
    return value


def _required_child(el: ET.Element, tag: str, source: str, where: str) -> ET.Element:
    child = el.find(tag)
    if child is None:
        raise UrdfError(f"{source}: {where}: <{el.tag}> has no <{tag}>")
    return child
