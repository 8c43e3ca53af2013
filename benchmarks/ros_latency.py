"""Latency of the ROS 2 stack on the sim (real time, wall clock): camera stamp -> command p50/p99, and the
decision through the stack (camera stamp -> RankingResult) over the same decision in one process, measured in
one run. A thin wrapper of `wm-vla demo` (which also runs the single-sample stack):

    python benchmarks/ros_latency.py --episodes 5 --out outputs/bench/ros_latency
"""

from __future__ import annotations

import sys

from wm_vla.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
