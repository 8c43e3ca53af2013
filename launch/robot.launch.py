"""ros2 launch wm_vla robot.launch.py robot:=arm|quadruped|sim backend:=torch k:=16 denoise_steps:=0 params_file:=<yaml> use_sim_time:=false record_bag:=<dir> inference_cpus:=auto

Maps the ONE bringup plan (`wm_vla.bringup.build_plan`) to launch_ros Node actions; `wm-vla up` runs the same plan
without system ROS. Lifecycle nodes configure and activate themselves on start. robot_state_publisher gets the
profile's URDF.
"""

from __future__ import annotations

from typing import Any

from wm_vla.bringup import NodeSpec, bringup_args, build_plan

# launch argument -> default (strings, as launch passes them); names are BringupArgs fields
ARGUMENTS = {"robot": "sim", "backend": "torch", "k": "16", "denoise_steps": "0", "params_file": "",
             "use_sim_time": "false", "rank": "true", "seed": "1000000", "policy": "", "world_model": "", "wm_encoder": "",
             "record_bag": "",
             "command_interface": "", "inference_cpus": "auto"}


def plan_for(values: dict[str, str]) -> list[NodeSpec]:
    """The plan for launch argument values (defaults filled in)."""
    return build_plan(bringup_args({**ARGUMENTS, **values}))


def node_action(spec: NodeSpec) -> Any:
    from launch_ros.actions import Node

    from wm_vla.cpus import node_environment

    return Node(package=spec.package, executable=spec.executable, name=spec.name, output="screen",
                parameters=[dict(spec.parameters)], remappings=list(spec.remappings),
                additional_env=node_environment())  # as `wm-vla up`: one BLAS/OpenMP thread per node


def generate_launch_description() -> Any:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def setup(context: Any) -> list[Any]:
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [node_action(spec) for spec in plan_for(values)]

    declared = [DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
