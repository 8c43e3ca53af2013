"""Encode + sample K chunks, in this process or in a child process of its own.

`SamplerProcess` runs the backend in a spawned child with its own interpreter, for isolation: a crash in the
inference library (a segfault in an engine, a CUDA error) does not take the ROS node down, a wedged inference is
killed after `call_timeout_s`, and the node's executor and the sampler do not share the GIL (a py-spy trace of
vla_node's worker thread found 9 % of its sampling time waiting for it, although moving it out did not make the
demo's decisions measurably faster: docs/ros_stack.md). Requests and results cross a pipe as a JSON header plus raw
numeric arrays; nothing is pickled. `InlineSampler` is the same interface on the calling thread.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from wm_vla.lifetime import exit_with_parent
from wm_vla.runtime.errors import BackendConfigError, RuntimeErrorBase, SamplerInputError, SamplerProcessError
from wm_vla.runtime.spec import ModelSpec


@dataclass(frozen=True)
class SamplerConfig:
    """What `open_backend` needs (policy only: no world model), plus the warm-up K and the sampler's nice value.
    `wm_encoder`: a second policy checkpoint whose encoder gives the world model its latent (`wm_latent`), when the
    world model was trained in another policy's latent than the acting one's (`wm-vla train world-model --policy`)."""

    backend: str
    policy: str
    onnx_dir: str | None = None
    device: str = "cpu"
    threads: int | None = None
    steps: int | None = None
    warm_k: int = 1
    nice: int = 0                 # added to the child process's nice value (SamplerProcess only)
    start_timeout_s: float = 300.0  # loading + exporting + warming up (an ONNX export or TensorRT build can be slow)
    call_timeout_s: float = 30.0    # one encode + sample; a child that takes longer is killed
    wm_encoder: str | None = None


@dataclass(frozen=True)
class Sampled:
    """One decision's policy output: latent z (latent_dim,), K chunks (K, H, A), FLARE latents (K, M, latent_dim),
    and the backend's own encode and sample times (ms); with a `wm_encoder`, the world model's latent of the same
    observation (wm_latent_dim,) and its encode time (else an empty array and 0)."""

    obs_latent: np.ndarray
    actions: np.ndarray
    future_latents: np.ndarray
    encode_ms: float
    sample_ms: float
    wm_latent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    wm_encode_ms: float = 0.0


class InlineSampler:
    """The backend on the calling thread."""

    def __init__(self, cfg: SamplerConfig) -> None:
        from wm_vla.runtime.decision import warm_up
        from wm_vla.runtime.loading import open_backend

        self.cfg = cfg
        sel = open_backend(cfg.backend, cfg.policy, None, cfg.onnx_dir, cfg.device, cfg.threads, steps=cfg.steps)
        self.backend, self.spec = sel.backend, sel.backend.spec
        self.fallbacks = [f.candidate for f in sel.fallbacks]
        self.wm_backend = open_wm_encoder(cfg, self.spec) if cfg.wm_encoder else None
        self.warm_s = warm_up(self.backend, cfg.warm_k, rollout=False)
        if self.wm_backend is not None:
            self.warm_s += warm_up(self.wm_backend, 1, rollout=False)

    def describe(self) -> str:
        extra = f" + world-model encoder {self.cfg.wm_encoder}" if self.wm_backend is not None else ""
        return self.backend.describe() + extra

    def sample(self, images: np.ndarray, state: np.ndarray, instruction: str, noise: np.ndarray) -> Sampled:
        t0 = time.perf_counter()
        enc = self.backend.encode(images, state, instruction)
        t1 = time.perf_counter()
        cand = self.backend.sample(enc, noise)
        t2 = time.perf_counter()
        if self.wm_backend is None:
            return Sampled(enc.obs_latent, cand.actions, cand.future_latents, 1e3 * (t1 - t0), 1e3 * (t2 - t1))
        wm_latent = self.wm_backend.encode(images, state, instruction).obs_latent
        return Sampled(enc.obs_latent, cand.actions, cand.future_latents, 1e3 * (t1 - t0), 1e3 * (t2 - t1),
                       wm_latent, 1e3 * (time.perf_counter() - t2))

    def close(self) -> None:
        self.backend.close()
        if self.wm_backend is not None:
            self.wm_backend.close()


def open_wm_encoder(cfg: SamplerConfig, spec: ModelSpec) -> Any:
    """The backend of `cfg.wm_encoder` (its encoder only is used), on the same backend kind and device as the policy.
    BackendConfigError when it reads other inputs than the acting policy (cameras, image size, state)."""
    from wm_vla.runtime.loading import open_backend

    assert cfg.wm_encoder
    backend = open_backend(cfg.backend, cfg.wm_encoder, None, None, cfg.device, cfg.threads).backend
    theirs = (backend.spec.cameras, backend.spec.image_size, backend.spec.state_dim)
    ours = (spec.cameras, spec.image_size, spec.state_dim)
    if theirs != ours:
        backend.close()
        raise BackendConfigError(f"the world-model encoder {cfg.wm_encoder} reads cameras/image size/state "
                                 f"{theirs}, the policy {cfg.policy} {ours}: they must see the same observation")
    return backend


def pack(meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> bytes:
    """One message: b"N", a 4-byte header length, a JSON header (`meta`, each array's dtype and shape), then the
    arrays' raw bytes. Numeric dtypes only: an object array would need pickle."""
    fields, blobs = [], []
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"array {name!r} of dtype {a.dtype} cannot be sent (numeric arrays only)")
        fields.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "nbytes": a.nbytes})
        blobs.append(a.tobytes())
    header = json.dumps({"meta": meta or {}, "arrays": fields}).encode()
    return b"".join((b"N", len(header).to_bytes(4, "little"), header, *blobs))


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a `pack` message; a control message (JSON) raises SamplerProcessError with its text, a
    malformed one SamplerProcessError too."""
    if data[:1] == b"J":
        msg = json.loads(data[1:])
        cls = SamplerInputError if msg.get("kind") == "input" else SamplerProcessError
        raise cls(msg.get("error", "the sampler process failed"))
    try:
        if data[:1] != b"N":
            raise ValueError("no message tag")
        n = int.from_bytes(data[1:5], "little")
        header = json.loads(data[5:5 + n])
        arrays, offset = {}, 5 + n
        for f in header["arrays"]:
            dtype = np.dtype(f["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"dtype {dtype}")
            end = offset + int(f["nbytes"])
            if end > len(data):
                raise ValueError("truncated")
            arrays[f["name"]] = np.frombuffer(data[offset:end], dtype).reshape(f["shape"]).copy()
            offset = end
        return dict(header["meta"]), arrays
    except (ValueError, KeyError, TypeError) as exc:
        raise SamplerProcessError(f"unexpected message from the sampler process ({len(data)} bytes: {exc})") from exc


def _control(**fields: Any) -> bytes:
    return b"J" + json.dumps(fields).encode()


def _serve(conn: Connection, cfg: dict[str, Any]) -> None:
    """The child: open the backend, say hello (spec, description), then answer requests until the pipe closes."""
    exit_with_parent(signal.SIGKILL)  # never outlive the node (a GPU context with nobody supervising it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the node, which closes the pipe
    if cfg["nice"] > 0:
        os.nice(cfg["nice"])
    try:
        sampler = InlineSampler(SamplerConfig(**cfg))
    except Exception as exc:  # noqa: BLE001 - every load failure goes back to the parent as text
        conn.send_bytes(_control(error=f"{type(exc).__name__}: {exc}", kind="load"))
        return
    conn.send_bytes(_control(hello=True, spec=sampler.spec.to_json(), describe=sampler.describe(),
                             fallbacks=sampler.fallbacks, warm_s=sampler.warm_s, pid=os.getpid()))
    while True:
        try:
            meta, req = unpack(conn.recv_bytes())
        except (EOFError, OSError):
            break
        except SamplerProcessError as exc:
            conn.send_bytes(_control(error=str(exc), kind="input"))
            continue
        try:
            out = sampler.sample(req["images"], req["state"], str(meta["instruction"]), req["noise"])
        except (RuntimeErrorBase, ValueError) as exc:
            conn.send_bytes(_control(error=f"{type(exc).__name__}: {exc}", kind="input"))
            continue
        except Exception as exc:  # noqa: BLE001
            conn.send_bytes(_control(error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", kind="crash"))
            continue
        conn.send_bytes(pack({"encode_ms": out.encode_ms, "sample_ms": out.sample_ms, "wm_encode_ms": out.wm_encode_ms},
                             obs_latent=out.obs_latent, actions=out.actions, future_latents=out.future_latents,
                             wm_latent=out.wm_latent))
    sampler.close()


class CallWatchdog:
    """Calls `expire()` when a call armed with `arm(timeout_s)` is not disarmed within that time. One thread for
    the watchdog's lifetime, not one per call: between steady calls it sleeps until the last deadline and re-arming
    does not wake it, so a call pays a lock, not a thread start (~0.25 ms of vla_node's path in the scheduler trace)."""

    def __init__(self, expire: Callable[[], None], name: str = "call_watchdog") -> None:
        self._expire = expire
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._waiting_until: float | None = None  # the end of the thread's current wait (None: until notified)
        self._closed = False
        self.fired = False  # the last armed call expired
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, timeout_s: float) -> None:
        with self._cond:
            self._deadline, self.fired = time.monotonic() + timeout_s, False
            if self._waiting_until is None or self._waiting_until > self._deadline:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    self._deadline, self.fired = None, True
                    self._expire()
                    continue
                self._waiting_until = self._deadline
                self._cond.wait(None if self._deadline is None else self._deadline - now)
                self._waiting_until = None


class SamplerProcess:
    """The backend in a spawned child process; the same interface as `InlineSampler`. A child that dies, hangs past
    `call_timeout_s` or answers garbage raises SamplerProcessError, after which `restart()` starts a new one."""

    def __init__(self, cfg: SamplerConfig) -> None:
        self.cfg = cfg
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent runs DDS threads (and maybe CUDA)
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_serve, args=(child, asdict(self.cfg)), name="wm_vla_sampler", daemon=True)
        self._proc.start()
        child.close()
        # a request larger than the socket buffer blocks the send while the child is stuck: the watchdog kills it
        self._watchdog = CallWatchdog(self._proc.kill, "sampler_watchdog")
        hello = self._recv(self.cfg.start_timeout_s, "start")
        if not hello.get("hello"):
            self.close()
            raise SamplerProcessError(f"the sampler process could not load the policy: {hello.get('error')}")
        self.spec = ModelSpec.from_json(hello["spec"])
        self.fallbacks: list[str] = list(hello["fallbacks"])
        self.warm_s = float(hello["warm_s"])
        self.pid = int(hello["pid"])
        self._describe = str(hello["describe"])

    def _recv(self, timeout_s: float, what: str) -> dict[str, Any]:
        """The child's next control message (JSON), or SamplerProcessError if it died or took too long."""
        data = self._recv_bytes(timeout_s, what)
        if data[:1] != b"J":
            raise SamplerProcessError(f"unexpected message from the sampler process during {what}")
        return dict(json.loads(data[1:]))

    def _recv_bytes(self, timeout_s: float, what: str) -> bytes:
        try:
            ready = self._conn.poll(timeout_s)
            if ready:
                return self._conn.recv_bytes()
        except (EOFError, OSError):
            pass
        alive = self._proc.is_alive()
        self.close()
        reason = f"no answer within {timeout_s:.0f} s" if alive else f"exit code {self._proc.exitcode}"
        raise SamplerProcessError(f"the sampler process failed during {what} ({reason})")

    @property
    def alive(self) -> bool:
        return self._proc.is_alive() and not self._conn.closed

    def restart(self) -> None:
        self.close()
        self._start()

    def describe(self) -> str:
        return f"{self._describe}, in process {self.pid}"

    def sample(self, images: np.ndarray, state: np.ndarray, instruction: str, noise: np.ndarray) -> Sampled:
        if not self.alive:
            raise SamplerProcessError("the sampler process is not running")
        request = pack({"instruction": instruction}, images=np.asarray(images, np.float32),
                       state=np.asarray(state, np.float32), noise=np.asarray(noise, np.float32))
        self._watchdog.arm(self.cfg.call_timeout_s)
        try:
            self._conn.send_bytes(request)
            data = self._recv_bytes(self.cfg.call_timeout_s, "sampling")
        except (OSError, ValueError, SamplerProcessError) as exc:
            self._watchdog.disarm()
            hung = self._watchdog.fired
            self.close()
            if hung:
                raise SamplerProcessError(f"the sampler process failed during sampling (no answer within "
                                          f"{self.cfg.call_timeout_s:.0f} s)") from exc
            if isinstance(exc, SamplerProcessError):
                raise
            raise SamplerProcessError(f"the sampler process failed during sampling (exit code "
                                      f"{self._proc.exitcode}: {exc})") from exc
        finally:
            self._watchdog.disarm()
        meta, out = unpack(data)
        return Sampled(out["obs_latent"], out["actions"], out["future_latents"], float(meta["encode_ms"]),
                       float(meta["sample_ms"]), out["wm_latent"], float(meta["wm_encode_ms"]))

    def close(self) -> None:
        """Close the pipe (the child leaves its loop) and reap the child; kill it if it does not go."""
        self._watchdog.close()
        if not self._conn.closed:
            self._conn.close()
        self._proc.join(timeout=5.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5.0)


def open_sampler(cfg: SamplerConfig, own_process: bool) -> InlineSampler | SamplerProcess:
    """`SamplerProcess` when `own_process`, else `InlineSampler`."""
    return SamplerProcess(cfg) if own_process else InlineSampler(cfg)
