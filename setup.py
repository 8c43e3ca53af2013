"""ament_python package `wm_vla`: the ROS-free core library, the node adapters and the `wm-vla` CLI."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "wm_vla"


def data(dest: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{dest}", sorted(glob(pattern)))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["wm_vla", "wm_vla.*", "vla_node", "world_model_node", "perception_node", "sim_node",
                                    "node_common", "bag_player"]),
    package_data={"wm_vla.runtime": ["data/*.json"],  # TensorRT ONNX-parser operator support list
                  "wm_vla.models": ["weights/*/MANIFEST.json", "weights/*/*/*"]},  # shipped tiny checkpoints
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        data("launch", "launch/*.py"),
        data("config/robots", "config/robots/*.yaml"),
        data("config/devices", "config/devices/*.yaml"),
        data("urdf", "urdf/*.urdf"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="wm_vla maintainers",
    maintainer_email="maintainers@users.noreply.h-seed-a85c2c7a.example",
    description="World-model-ranked VLA control for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": [
        "wm-vla = wm_vla.cli:main",
        "sim_robot = sim_node.node:main",
        "perception_node = perception_node.node:main",
        "vla_node = vla_node.node:main",
        "world_model_node = world_model_node.node:main",
        "bag_recorder = bag_player.record:main",
    ]},
)
