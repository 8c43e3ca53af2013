"""CPU budget: the cgroup quota caps the thread pools (a `--cpus=2` container on a big host), node environments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wm_vla.cpus import cgroup_cpu_quota, node_environment, usable_cpus


def _cgroup(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.stat").write_text("usage_usec 10\nnr_throttled 0\nthrottled_usec 0\n")
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


@pytest.mark.parametrize(("cpu_max", "cores"), [("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_quota_in_cores_caps_the_usable_cpus(tmp_path: Path, cpu_max: str, cores: float) -> None:
    cg = _cgroup(tmp_path, cpu_max)
    assert cgroup_cpu_quota(cg) == pytest.approx(cores)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(cg) == max(1, min(affinity, -(-int(cpu_max.split()[0]) // 100000)))


@pytest.mark.parametrize("cpu_max", ["max 100000", "", "garbage", "200000 0", "-1 100000", "1 2 3"])
def test_no_or_unreadable_quota_means_the_affinity_mask(tmp_path: Path, cpu_max: str) -> None:
    cg = _cgroup(tmp_path, cpu_max)
    assert cgroup_cpu_quota(cg) is None
    assert usable_cpus(cg) == len(os.sched_getaffinity(0))


def test_node_environment_fills_only_what_the_user_did_not_set() -> None:
    env = node_environment({"OMP_NUM_THREADS": "4", "PATH": "/usr/bin"})
    assert "OMP_NUM_THREADS" not in env    # the user's choice wins
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["LP_NUM_THREADS"] == str(usable_cpus())
    assert node_environment({"OMP_NUM_THREADS": "4", **{k: "1" for k in env}}) == {}
