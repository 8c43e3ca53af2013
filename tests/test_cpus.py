"""CPU budget: the cgroup quota caps the thread pools (a `--cpus=2` container on a big host), node environments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wm_vla.cpus import (
    CpuAffinityError,
    cgroup_cpu_quota,
    inference_split,
    node_environment,
    parse_cpu_list,
    thread_scheduling_kept,
    usable_cpus,
)


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


def _allowed() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def test_cpu_lists_parse_like_taskset_and_bad_ones_are_refused() -> None:
    cpus = _allowed()
    assert parse_cpu_list("") == () and parse_cpu_list(str(cpus[0])) == (cpus[0],)
    assert parse_cpu_list(f"{cpus[0]}-{cpus[-1]}") == tuple(range(cpus[0], cpus[-1] + 1))
    assert parse_cpu_list(",".join(str(c) for c in reversed(cpus))) == tuple(cpus)
    for bad, message in (("one", "not a CPU number"), ("3-1", "bad range"), ("-1", "not a CPU number|bad range"),
                         ("4096", "not available to this process")):
        with pytest.raises(CpuAffinityError, match=message):
            parse_cpu_list(bad)


def test_inference_gets_the_last_usable_cpu_and_the_other_nodes_the_rest() -> None:
    cpus = _allowed()
    assert inference_split("off") is None and inference_split("") is None
    auto = inference_split("auto")
    if usable_cpus() < 2:
        assert auto is None  # one CPU: nothing to isolate
        return
    assert auto is not None
    inference, others = auto
    assert parse_cpu_list(inference) == (cpus[usable_cpus() - 1],)
    assert set(parse_cpu_list(others)) == set(cpus) - set(parse_cpu_list(inference))
    assert inference_split(str(cpus[0])) == (str(cpus[0]), ",".join(str(c) for c in cpus[1:]))
    with pytest.raises(CpuAffinityError, match="leave at least one"):
        inference_split(f"{cpus[0]}-{cpus[-1]}")


def test_pinning_a_process_pins_its_existing_threads_and_later_children(tmp_path: Path) -> None:
    cpu = _allowed()[0]
    code = (f"import os, threading, time, subprocess, sys\n"
            f"from wm_vla.cpus import pin_process\n"
            f"started = threading.Event()\n"
            f"t = threading.Thread(target=lambda: (started.set(), time.sleep(5)), daemon=True); t.start(); started.wait()\n"
            f"n = pin_process(({cpu},))\n"
            f"masks = {{tid: os.sched_getaffinity(int(tid)) for tid in os.listdir('/proc/self/task')}}\n"
            f"child = subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'],"
            f" capture_output=True, text=True).stdout.strip()\n"
            f"print(n, sorted(set(map(tuple, map(sorted, masks.values())))), child)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout.split(maxsplit=1)
    assert int(out[0]) >= 2  # the main thread and the one started before pinning
    assert out[1].strip() == f"[({cpu},)] [{cpu}]"


def test_a_thread_gets_its_scheduling_back_after_a_block_that_changed_it() -> None:
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    with thread_scheduling_kept() as found:  # SCHED_BATCH: allowed without privilege, like what a library might do
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    assert found.left_policy == os.SCHED_BATCH
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    with thread_scheduling_kept() as found:
        pass
    assert found.left_policy is None
    with pytest.raises(KeyError), thread_scheduling_kept():  # also when the block fails
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        raise KeyError("x")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
