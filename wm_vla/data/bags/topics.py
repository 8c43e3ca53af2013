"""Which bag topic carries what: defaults from the robot profile (realsense2_camera, joint_states, JTC / forward /
cmd_vel commands), overridable per entry with `name=/topic` pairs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from wm_vla.data.errors import BagTopicError
from wm_vla.robots import RobotProfile

# Topics of our own stack (what a recording of the live stack holds besides the robot's topics).
STACK_TOPICS = {"observation": "/wm_vla/observation", "candidates": "/wm_vla/action_candidates",
                "ranking": "/wm_vla/ranking_result"}


def camera_topic(name: str) -> str:
    """realsense2_camera's naming for a camera called `name` in namespace `camera`."""
    return f"/camera/{name}/color/image_raw"


@dataclass(frozen=True)
class CommandSource:
    """A recorded command stream: `interface` joint_trajectory | position_commands | twist; `joints` orders arrays."""

    topic: str
    interface: str
    joints: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopicMap:
    cameras: Mapping[str, str]                       # policy camera name -> image topic (raw; /compressed found too)
    joint_states: str
    commands: tuple[CommandSource, ...]              # together they cover the action dims
    instruction: str = "/instruction"
    marker: str | None = None                        # episode marker topic (std_msgs/String or Bool), optional
    stack: Mapping[str, str] = field(default_factory=lambda: dict(STACK_TOPICS))
    odometry: str | None = None                      # nav_msgs/Odometry, the state of body-velocity robots
    state_kind: str = "joint_position"               # joint_position (state from joint_states) | odometry

    @property
    def state(self) -> str:
        """The topic the robot state vector comes from."""
        return (self.odometry or "/odom") if self.state_kind == "odometry" else self.joint_states

    @classmethod
    def from_profile(cls, profile: RobotProfile, cameras: Iterable[str]) -> TopicMap:
        """Defaults: profile cameras by name (others at realsense2_camera names), trajectory (or forward) + gripper
        controllers for arms, cmd_vel for body-velocity robots."""
        known = {c.name: c.topic for c in profile.cameras}
        cams = {name: known.get(name, camera_topic(name)) for name in cameras}
        ctrl = profile.controllers
        if profile.action.kind == "body_velocity":
            spec = next((c for c in ctrl.values() if c.interface == "twist"), None)
            commands = (CommandSource(spec.topic if spec else "/cmd_vel", "twist"),)
        else:
            arm = ctrl.get("trajectory") or ctrl.get("forward")
            commands = tuple(CommandSource(c.topic, c.interface, tuple(c.joints))
                             for c in (arm, ctrl.get("gripper")) if c is not None)
        return cls(cams, profile.topics.joint_states, commands, profile.topics.instruction,
                   odometry=profile.topics.odometry, state_kind=profile.state.kind)

    def with_overrides(self, pairs: Mapping[str, str]) -> TopicMap:
        """Override entries: a camera name, joint_states, instruction, marker, a stack topic (observation,
        candidates, ranking), `command` (first command source) or `command.N`."""
        cams, stack, commands, out = dict(self.cameras), dict(self.stack), list(self.commands), self
        for key, topic in pairs.items():
            if not topic.startswith("/"):
                raise BagTopicError(f"topic for {key!r} must be absolute (start with '/'), got {topic!r}")
            if key in cams:
                cams[key] = topic
            elif key in stack:
                stack[key] = topic
            elif key in ("joint_states", "instruction", "marker", "odometry"):
                out = replace(out, **{key: topic})
            elif key == "command" or key.startswith("command."):
                i = 0 if key == "command" else int(key.split(".", 1)[1]) if key.split(".", 1)[1].isdigit() else -1
                if not 0 <= i < len(commands):
                    raise BagTopicError(f"no command source {key!r} (have {len(commands)})")
                commands[i] = replace(commands[i], topic=topic)
            else:
                names = sorted([*cams, *stack, "joint_states", "odometry", "instruction", "marker", "command"])
                raise BagTopicError(f"unknown topic entry {key!r} (known: {', '.join(names)})")
        return replace(out, cameras=cams, stack=stack, commands=tuple(commands))


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`name=/topic` strings -> dict (CLI --topic)."""
    out = {}
    for item in items:
        name, sep, topic = item.partition("=")
        if not sep or not name or not topic:
            raise BagTopicError(f"expected NAME=/topic, got {item!r}")
        out[name.strip()] = topic.strip()
    return out
