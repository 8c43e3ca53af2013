"""The robot-facing command topics of a profile, shared by every node that commands the robot (world_model_node,
teleop_node). Joint robots use one of two interfaces (`COMMAND_INTERFACES`):

* `position_commands`: Float64MultiArray on the forward position controllers (a follower gripper joint takes the
  commanded one's value; the observation-stamp lineage in layout.dim[0].label, "obs_stamp_ns=<ns>", 0 while holding);
* `joint_trajectory`: trajectory_msgs/JointTrajectory on each JTC's `<controller>/joint_trajectory`, one point per
  command. header.stamp = the lineage (the observation stamp) and the point's time_from_start = (publish time -
  observation stamp) + one command period, so the point is due one period after publishing, as a
  joint_trajectory_controller reads a stamped trajectory (a JTC rejects one that ends in the past); while holding
  header.stamp is 0 (JTC: "start on receipt") and time_from_start one period. Joints no JTC covers (the gripper)
  keep their position_commands controller.

Velocity robots: Twist/TwistStamped on cmd_vel (TwistStamped header stamp = the lineage, or now when holding).
Also the joint-state check both nodes share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from node_common.diagnostics import ERROR, Diagnostics
from node_common.msgs import COMMAND_QOS, from_ns
from wm_vla.robots import RobotProfile
from wm_vla.runtime.errors import SafetyError
from wm_vla.runtime.safety import check_joint_state


COMMAND_INTERFACES = ("position_commands", "joint_trajectory")  # joint robots


class CommandOutputs:
    """Publishers for the profile's command interface; `create` is the node's (lifecycle) publisher factory,
    `interface` one of COMMAND_INTERFACES for joint robots (ignored by twist robots), `period_s` the command period
    (a trajectory point's horizon; default: the profile's control period). ValueError for an unusable interface."""

    def __init__(self, node: Node, profile: RobotProfile, create: Callable[..., Any] | None = None,
                 interface: str = "position_commands", period_s: float | None = None) -> None:
        create = create or node.create_publisher
        self.node, self.profile = node, profile
        self.period_ns = round(1e9 * (period_s or 1.0 / profile.control_rate_hz))
        self.twist = next((c for c in profile.controllers.values() if c.interface == "twist"), None)
        self.pubs: dict[str, Any] = {}
        self.position: list[tuple[list[int], Any]] = []
        self.trajectory: list[tuple[tuple[str, ...], list[int], Any]] = []
        if self.twist is not None:
            self.pubs[self.twist.topic] = create(TwistStamped if self.twist.stamped else Twist, self.twist.topic,
                                                 COMMAND_QOS)
            return
        if interface not in COMMAND_INTERFACES:
            raise ValueError(f"command_interface {interface!r} is not one of {list(COMMAND_INTERFACES)}")
        names = profile.action.names
        chosen = [c for c in profile.controllers.values() if c.interface == interface]
        if not chosen:
            raise ValueError(f"robot {profile.name} has no '{interface}' controller (controllers: "
                             f"{ {k: c.interface for k, c in profile.controllers.items()} })")
        covered = {j for c in chosen for j in c.joints}
        chosen += [c for c in profile.controllers.values()  # joints the chosen interface lacks (a JTC's gripper)
                   if c.interface == "position_commands" and c not in chosen and not covered.issuperset(c.joints)]
        for spec in chosen:
            cols = [names.index(j) if j in names else names.index(next(g for g in profile.gripper_joints if g in names))
                    for j in spec.joints]
            if spec.interface == "joint_trajectory":
                self.pubs[spec.topic] = create(JointTrajectory, spec.topic, COMMAND_QOS)
                self.trajectory.append((spec.joints, cols, self.pubs[spec.topic]))
            else:
                self.pubs[spec.topic] = create(Float64MultiArray, spec.topic, COMMAND_QOS)
                self.position.append((cols, self.pubs[spec.topic]))

    def publish(self, values: np.ndarray, lineage_ns: int) -> None:
        if self.twist is not None:
            v = {n: float(x) for n, x in zip(self.profile.action.names, values)}
            tw = Twist()
            tw.linear.x, tw.linear.y, tw.linear.z = v.get("vx", 0.0), v.get("vy", 0.0), v.get("vz", 0.0)
            tw.angular.x, tw.angular.y, tw.angular.z = v.get("wx", 0.0), v.get("wy", 0.0), v.get("wz", 0.0)
            pub = self.pubs[self.twist.topic]
            if self.twist.stamped:
                msg = TwistStamped(twist=tw)
                msg.header.stamp = from_ns(lineage_ns) if lineage_ns else self.node.get_clock().now().to_msg()
                msg.header.frame_id = self.profile.base_link
                pub.publish(msg)
            else:
                pub.publish(tw)
            return
        for cols, pub in self.position:
            msg = Float64MultiArray(data=[float(values[c]) for c in cols])
            msg.layout.dim = [MultiArrayDimension(label=f"obs_stamp_ns={lineage_ns}", size=len(cols), stride=len(cols))]
            pub.publish(msg)
        if self.trajectory:
            self._trajectories(values, lineage_ns)

    def _trajectories(self, values: np.ndarray, lineage_ns: int) -> None:
        """One JointTrajectory point per JTC, due one period after now (see the module docstring)."""
        ahead = self.period_ns
        if lineage_ns:
            ahead += max(self.node.get_clock().now().nanoseconds - lineage_ns, 0)
        for joints, cols, pub in self.trajectory:
            point = JointTrajectoryPoint(positions=[float(values[c]) for c in cols],
                                         time_from_start=Duration(nanoseconds=ahead).to_msg())
            msg = JointTrajectory(joint_names=list(joints), points=[point])
            msg.header.stamp = from_ns(lineage_ns)
            msg.header.frame_id = self.profile.base_link
            pub.publish(msg)


def checked_joint_state(msg: JointState, names: tuple[str, ...], counts: Counter[str],
                        diag: Diagnostics) -> np.ndarray | None:
    """Positions of `names` from a JointState, or None with the reason counted and reported (NaN, short, missing)."""
    try:
        return check_joint_state(msg.name, msg.position, names)
    except SafetyError as exc:
        counts[f"rejected_joint_state_{exc.reason}"] += 1
        diag.warn(f"joint state rejected ({exc.reason}): {exc}", ERROR)
        return None
