"""The sampler in a child process (vla_node's `inference_process`): same chunks as in-process, typed errors for bad
inputs, a dead or hung child, and a policy that does not load; nothing is unpickled on the way."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wm_vla.runtime.errors import SamplerInputError, SamplerProcessError
from wm_vla.runtime.sampler_process import CallWatchdog, InlineSampler, SamplerConfig, SamplerProcess, pack, unpack
from wm_vla.runtime.spec import ModelSpec, candidate_noise
from wm_vla.training.pipeline import default_checkpoints

TASK = "touch the red cube"


def _cfg(**kw: object) -> SamplerConfig:
    return SamplerConfig(**{"backend": "torch", "policy": str(default_checkpoints()[0]), "threads": 1,
                            "warm_k": 4, **kw})  # type: ignore[arg-type]


def _inputs(spec: ModelSpec, k: int = 4, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((1, len(spec.cameras), 3, spec.image_size, spec.image_size), dtype=np.float32)
    state = rng.standard_normal((1, spec.state_dim)).astype(np.float32)
    return images, state, candidate_noise(spec.horizon, spec.action_dim, k, seed)


@pytest.fixture(scope="module")
def proc() -> Iterator[SamplerProcess]:
    sampler = SamplerProcess(_cfg())
    yield sampler
    sampler.close()


def test_child_process_samples_the_same_chunks_as_in_process(proc: SamplerProcess) -> None:
    inline = InlineSampler(_cfg())
    assert proc.spec == inline.spec and proc.pid != os.getpid() and "in process" in proc.describe()
    images, state, noise = _inputs(inline.spec)
    a, b = inline.sample(images, state, TASK, noise), proc.sample(images, state, TASK, noise)
    inline.close()
    assert b.actions.shape == (4, inline.spec.horizon, inline.spec.action_dim)
    np.testing.assert_array_equal(a.actions, b.actions)  # same weights, same noise, one thread each: bit-exact
    np.testing.assert_array_equal(a.obs_latent, b.obs_latent)
    np.testing.assert_array_equal(a.future_latents, b.future_latents)
    assert b.encode_ms > 0 and b.sample_ms > 0


def test_bad_inputs_raise_a_typed_error_and_the_child_keeps_serving(proc: SamplerProcess) -> None:
    images, state, noise = _inputs(proc.spec)
    with pytest.raises(SamplerInputError):
        proc.sample(images[:, :, :, :5], state, TASK, noise)  # wrong image size
    with pytest.raises(SamplerInputError):
        proc.sample(images, state, TASK, noise[:, :2])  # noise of the wrong horizon
    assert proc.alive
    assert np.isfinite(proc.sample(images, state, TASK, noise).actions).all()


def test_a_killed_child_raises_then_restarts() -> None:
    sampler = SamplerProcess(_cfg())
    images, state, noise = _inputs(sampler.spec)
    os.kill(sampler.pid, signal.SIGKILL)
    with pytest.raises(SamplerProcessError, match=r"sampler process failed .*exit code -9"):
        sampler.sample(images, state, TASK, noise)
    assert not sampler.alive
    with pytest.raises(SamplerProcessError, match="not running"):
        sampler.sample(images, state, TASK, noise)
    old = sampler.pid
    sampler.restart()
    assert sampler.pid != old and sampler.sample(images, state, TASK, noise).actions.shape[0] == 4
    sampler.close()


def test_a_hung_child_times_out_and_is_killed() -> None:
    sampler = SamplerProcess(_cfg(call_timeout_s=2.0))
    images, state, noise = _inputs(sampler.spec)
    os.kill(sampler.pid, signal.SIGSTOP)  # a child that never answers (a wedged driver, a deadlock)
    with pytest.raises(SamplerProcessError, match="no answer within 2 s"):
        sampler.sample(images, state, TASK, noise)
    assert not sampler.alive  # killed, not left stopped


def test_a_hung_child_is_killed_even_while_a_large_request_blocks_the_send() -> None:
    sampler = SamplerProcess(_cfg(call_timeout_s=2.0))
    images, state, noise = _inputs(sampler.spec)
    big = np.zeros((1, 1, 3, 1024, 1024), np.float32)  # 12 MB: far more than the socket buffer holds
    os.kill(sampler.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(SamplerProcessError, match="no answer within 2 s"):
        sampler.sample(big, state, TASK, noise)
    assert time.monotonic() - t0 < 20 and not sampler.alive
    sampler.restart()  # a new child with a watchdog of its own
    assert sampler.sample(images, state, TASK, noise).actions.shape[0] == 4
    sampler.close()


def test_calls_start_no_thread_each(proc: SamplerProcess) -> None:
    images, state, noise = _inputs(proc.spec)
    proc.sample(images, state, TASK, noise)
    before = threading.active_count()
    for _ in range(5):
        proc.sample(images, state, TASK, noise)
    assert threading.active_count() == before


def test_the_watchdog_fires_only_for_a_call_not_disarmed_in_time() -> None:
    fired: list[float] = []
    dog = CallWatchdog(lambda: fired.append(time.monotonic()))
    try:
        dog.arm(0.2)
        dog.disarm()
        time.sleep(0.5)
        assert not fired and not dog.fired  # disarmed in time
        dog.arm(5.0)  # the thread now sleeps until this deadline ...
        dog.disarm()
        t0 = time.monotonic()
        dog.arm(0.3)  # ... and an earlier one wakes it
        deadline = t0 + 4.0
        while not fired and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fired and dog.fired and 0.25 <= fired[0] - t0 < 4.0
        dog.arm(0.2)  # re-armed after firing: fires again; `fired` is about the last call
        assert not dog.fired
        while len(fired) < 2 and time.monotonic() < deadline + 4.0:
            time.sleep(0.02)
        assert len(fired) == 2
    finally:
        dog.close()


def test_a_policy_that_does_not_load_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "policy"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(SamplerProcessError, match="could not load the policy"):
        SamplerProcess(_cfg(policy=str(bad)))


def test_messages_carry_numeric_arrays_and_json_only() -> None:
    meta, arrays = unpack(pack({"instruction": TASK}, a=np.arange(3.0), b=np.ones((2, 2), np.float32)))
    assert meta == {"instruction": TASK} and arrays["a"].tolist() == [0.0, 1.0, 2.0]
    assert arrays["b"].dtype == np.float32 and arrays["b"].flags.writeable
    with pytest.raises(ValueError, match="numeric arrays only"):  # an object array would need pickle: refused
        pack(a=np.array([{"x": 1}], dtype=object))
    good = pack({}, a=np.arange(4.0))
    for bad in (b"Xgarbage", good[:-3], good[:1] + (10**6).to_bytes(4, "little") + good[5:]):
        with pytest.raises(SamplerProcessError, match="unexpected message"):
            unpack(bad)
