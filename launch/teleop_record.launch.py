"""ros2 launch wm_vla teleop_record.launch.py robot:=sim teleop:=joy record:=/data/demos [intervene:=true]

Teleoperation + crash-safe LeRobot recording, from the ONE bringup plan (`wm_vla.bringup.build_plan` with `teleop`
and `record`); `wm-vla up --teleop keyboard --record DIR` runs the same plan without system ROS. teleop: keyboard |
joy | spacemouse | leader. With intervene:=true the policy stack runs too (its commands under /wm_vla/policy) and
teleop takes over while the operator is active. Keyboard teleop needs a terminal: prefer `wm-vla up` for it, or give
teleop_node `keyboard_device` in params_file.
"""

from __future__ import annotations

from typing import Any

from wm_vla.bringup import NodeSpec, bringup_args, build_plan

# launch argument -> default (strings, as launch passes them); names are BringupArgs fields
ARGUMENTS = {"robot": "sim", "teleop": "joy", "record": "", "intervene": "false", "record_fps": "0",
             "teleop_max_linear": "0.15",
             "params_file": "", "use_sim_time": "false", "seed": "1000000", "backend": "torch", "k": "16",
             "policy": "", "world_model": ""}


def plan_for(values: dict[str, str]) -> list[NodeSpec]:
    """The plan for launch argument values (defaults filled in)."""
    return build_plan(bringup_args({**ARGUMENTS, **values}))


def generate_launch_description() -> Any:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def setup(context: Any) -> list[Any]:
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [Node(package=s.package, executable=s.executable, name=s.name, output="screen",
                     parameters=[dict(s.parameters)], remappings=list(s.remappings)) for s in plan_for(values)]

    declared = [DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
