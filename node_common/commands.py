"""The robot-facing command topics of a profile, shared by every node that commands the robot (world_model_node,
teleop_node): Float64MultiArray on the position controllers (a follower gripper joint takes the commanded one's value;
the observation-stamp lineage in layout.dim[0].label, "obs_stamp_ns=<ns>", 0 while holding) or Twist/TwistStamped
on cmd_vel (TwistStamped header stamp = the lineage, or now when holding). Also the joint-state check both share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from node_common.diagnostics import ERROR, Diagnostics
from node_common.msgs import COMMAND_QOS, from_ns
from wm_vla.robots import RobotProfile
from wm_vla.runtime.errors import SafetyError
from wm_vla.runtime.safety import check_joint_state


class CommandOutputs:
    """Publishers for the profile's command interface; `create` is the node's (lifecycle) publisher factory."""

    def __init__(self, node: Node, profile: RobotProfile, create: Callable[..., Any] | None = None) -> None:
        create = create or node.create_publisher
        self.node, self.profile = node, profile
        self.twist = next((c for c in profile.controllers.values() if c.interface == "twist"), None)
        self.pubs: dict[str, Any] = {}
        self.position: list[tuple[list[int], Any]] = []
        if self.twist is not None:
            self.pubs[self.twist.topic] = create(TwistStamped if self.twist.stamped else Twist, self.twist.topic,
                                                 COMMAND_QOS)
            return
        names = profile.action.names
        for spec in (c for c in profile.controllers.values() if c.interface == "position_commands"):
            cols = [names.index(j) if j in names else names.index(next(g for g in profile.gripper_joints if g in names))
                    for j in spec.joints]
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


def checked_joint_state(msg: JointState, names: tuple[str, ...], counts: Counter[str],
                        diag: Diagnostics) -> np.ndarray | None:
    """Positions of `names` from a JointState, or None with the reason counted and reported (NaN, short, missing)."""
    try:
        return check_joint_state(msg.name, msg.position, names)
    except SafetyError as exc:
        counts[f"rejected_joint_state_{exc.reason}"] += 1
        diag.warn(f"joint state rejected ({exc.reason}): {exc}", ERROR)
        return None
