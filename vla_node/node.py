"""vla_node (lifecycle): Observation + latched instruction -> ActionCandidates (K chunks of the FLARE policy).

configure loads the policy through the runtime backend; activate starts publishing. Observations arrive on the
node's executor and only the newest waits (older ones that arrive while the model is busy are skipped and
counted); inference runs on its own worker thread (node_common.worker). `decision_period_s` (default: the policy's execution
horizon) spaces decisions by observation stamp, so a chunk is executed for that long before the next one; the
spacing is checked again when inference starts, so a frame that waited behind a decision is not decided within that
decision's period (counted as `throttled_after_wait`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String
from wm_vla_interfaces.msg import ActionCandidates, Observation

from node_common.budget import BUDGET_PARAMETERS, NodeBudget
from node_common.diagnostics import ERROR, Diagnostics
from node_common.lifecycle import ModelNode, default_checkpoint
from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, f32, to_s
from node_common.spacing import DecisionSpacing
from node_common.spin import run
from node_common.worker import WORKER_PARAMETERS, NewestWorker
from perception_node.node import OBSERVATION_TOPIC
from wm_vla.robots import load_profile
from wm_vla.runtime.errors import InstructionError, LatencyConfigError, RuntimeErrorBase, SamplerProcessError
from wm_vla.runtime.sampler_process import SamplerConfig, open_sampler
from wm_vla.runtime.spec import candidate_noise
from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

CANDIDATES_TOPIC = "/wm_vla/action_candidates"


def default_policy() -> str:
    return default_checkpoint(0)


# (name, default): the node's ROS parameters (params files, `wm-vla latency tune` output)
PARAMETERS: list[tuple[str, object]] = [
    ("robot", "arm"), ("backend", "torch"), ("device", "cpu"), ("policy", ""), ("onnx_dir", ""),
    # the policy whose encoder gives the world model its latent (ActionCandidates.wm_latent): "" = the shipped world
    # model's encoder when the shipped policy is in use, "none" = no second encoder (the world model ranks in
    # obs_latent); must match world_model_node's wm_encoder
    ("wm_encoder", ""),
    ("threads", 1), ("k", 16), ("seed", 0), ("decision_period_s", -1.0), ("max_obs_age_ms", 0.0),
    # Euler steps per sample: 0 = the policy config's (or the onnx_dir export's); else an export of its own
    ("denoise_steps", 0),
    ("observation", OBSERVATION_TOPIC), ("output", CANDIDATES_TOPIC),
    # live latency budget on encode + sample (node_common.budget): fewer candidates (K levels, then 1) when over it
    *BUDGET_PARAMETERS,
    # inference thread's (or process's) added nice value (node_common.worker): I/O first under CPU contention
    *WORKER_PARAMETERS,
    # encode + sample in a child process of the node (wm_vla.runtime.sampler_process): a crash or hang in inference
    # is isolated, reported and restarted, and the sampler does not share the GIL with the executor. false: on the
    # worker thread
    ("inference_process", True),
    # fault injection (tests, drills): extra ms inside the sampling stage; settable at run time
    ("inject_sample_delay_ms", 0.0)]


class VlaNode(ModelNode):
    def __init__(self) -> None:
        super().__init__("vla_node")
        self.declare_parameters("", PARAMETERS)
        self.lock = threading.Lock()
        self.budget: NodeBudget | None = None
        self.instruction: str | None = None
        self.counts: Counter[str] = Counter()
        # obs_age: camera stamp -> inference start (perception, transport, waiting for the worker)
        self.stage_ms: dict[str, deque[float]] = {s: deque(maxlen=200)
                                                  for s in ("obs_age", "inputs", "encode", "sample", "wm_encode",
                                                            "total", "publish")}
        self.spacing = DecisionSpacing(0.0)
        self.decisions = 0

    # ----- lifecycle -----
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.profile = load_profile(self.p("robot"))
        own_process = bool(self.p("inference_process"))
        cfg = SamplerConfig(self.p("backend"), self.p("policy") or default_policy(), self.p("onnx_dir") or None,
                            self.p("device"), self.p("threads") or None, int(self.p("denoise_steps")) or None,
                            warm_k=int(self.p("k")), nice=int(self.p("worker_nice")) if own_process else 0,
                            wm_encoder=resolve_wm_encoder(self.p("wm_encoder"), is_shipped(self.p("policy")),
                                                          self.p("robot")))
        try:  # loads, then warms up: the first decision would otherwise pay for lazy initialisation (~0.6 s, torch)
            self.backend = open_sampler(cfg, own_process)
        except (RuntimeErrorBase, OSError, ValueError) as exc:
            return self.refuse(f"cannot load the policy: {exc}")
        spec = self.backend.spec
        if spec.action_dim != len(self.profile.action.names) or spec.state_dim != len(self.profile.state.names):
            return self.refuse(f"policy (state {spec.state_dim}, action {spec.action_dim}) does not fit robot "
                               f"{self.profile.name} (state {len(self.profile.state.names)}, action "
                               f"{len(self.profile.action.names)})")
        self.spec, self.k = spec, int(self.p("k"))
        self.policy_id = f"{self.p('policy') or default_policy()} ({self.backend.describe()})"
        period = float(self.p("decision_period_s"))
        self.period = period if period >= 0 else self._exec_horizon() / self.profile.policy_rate_hz
        try:
            self.spacing = DecisionSpacing(self.period)
        except ValueError as exc:
            return self.refuse(f"bad decision_period_s: {exc}")
        self.max_age = (self.p("max_obs_age_ms") or self.profile.max_obs_age_ms) / 1e3
        self.diag = Diagnostics(self, "vla")
        try:
            self.budget = NodeBudget.from_node(self, self.diag, k=self.k)
        except LatencyConfigError as exc:
            return self.refuse(f"bad latency budget settings: {exc}")
        self.pub = self.create_lifecycle_publisher(ActionCandidates, self.p("output"), COMMAND_QOS)
        self.create_subscription(Observation, self.p("observation"), self._on_obs, SENSOR_QOS)
        self.create_subscription(String, self.profile.topics.instruction, self._on_instruction, LATCHED_QOS)
        # in its own process the sampler is niced there; this thread only waits on the pipe
        self.worker = NewestWorker(self._infer, "vla_inference", self._worker_failed,
                                   0 if own_process else int(self.p("worker_nice")))
        self.create_timer(1.0, self._diagnostics)
        self.get_logger().info(f"policy loaded on {self.backend.describe()} (fallbacks: "
                               f"{self.backend.fallbacks}); K={self.k}, {spec.steps} Euler steps, "
                               f"decision period {self.period} s, warmed up in {self.backend.warm_s:.2f} s")
        return TransitionCallbackReturn.SUCCESS

    def _exec_horizon(self) -> int:
        import json
        from pathlib import Path

        cfg = json.loads((Path(self.p("policy") or default_policy()) / "config.json").read_text())["config"]
        return int(cfg.get("exec_horizon", cfg["horizon"]))

    # ----- inputs -----
    def _on_instruction(self, msg: String) -> None:
        """A new task. One the policy cannot act on (empty, no known word) is refused: no candidates until a valid
        instruction arrives (the world_model_node, which clears its chunks on any new task, holds meanwhile)."""
        try:
            unknown = self.spec.unknown_words(msg.data)
        except InstructionError as exc:
            with self.lock:
                self.instruction = None
            self.counts["rejected_instructions"] += 1
            self.get_logger().error(f"instruction refused, no candidates until a valid one: {exc}")
            self.diag.warn(f"instruction refused: {exc}", ERROR)
            return
        if unknown:
            self.diag.warn(f"instruction {msg.data!r}: words {unknown} are not in the policy's vocabulary (ignored)")
        with self.lock:
            self.instruction = msg.data
            self.spacing.reset()  # a new task: decide on the next observation
        self.get_logger().info(f"new task {msg.data!r}")

    def _on_obs(self, msg: Observation) -> None:
        if not self.active:
            return
        if not self.spacing.due(to_s(msg.header.stamp)):
            self.counts["throttled"] += 1
            return
        if self.worker is not None and self.worker.submit(msg):
            self.counts["skipped_busy"] += 1

    # ----- inference (worker thread) -----
    def _worker_failed(self, exc: BaseException) -> None:
        self._drop("inference_error", f"inference failed: {type(exc).__name__}: {exc}")

    def _infer(self, msg: Observation) -> None:
        if not self.active:
            return
        stamp = to_s(msg.header.stamp)
        if not self.spacing.due(stamp):  # it waited behind the decision that just ended, within that one's period
            self.counts["throttled_after_wait"] += 1
            return
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp  # camera stamp -> inference start
        if age > self.max_age:
            self._drop("stale_observation", f"observation {stamp:.3f} s is older than {self.max_age * 1e3:.0f} ms")
            return
        if self.instruction is None:
            self._drop("no_instruction", f"no instruction yet on {self.profile.topics.instruction}")
            return
        try:
            t_in = time.perf_counter()
            images, state = self._inputs(msg)
            t0 = time.perf_counter()
            seed = int(self.p("seed")) + self.decisions
            k = self.budget.mode.k if self.budget is not None else self.k
            noise = candidate_noise(self.spec.horizon, self.spec.action_dim, k, seed)
            out = self.backend.sample(images, state, self.instruction, noise)
            delay = float(self.p("inject_sample_delay_ms"))
            if delay > 0:
                time.sleep(delay / 1e3)
            t2 = time.perf_counter()
        except SamplerProcessError as exc:  # the process died or hung: no candidates (the robot holds), restart it
            self._drop("sampler_process_failed", f"{exc}; restarting it")
            self._restart_sampler()
            return
        except (RuntimeErrorBase, ValueError) as exc:
            self._drop("bad_observation", str(exc))
            return
        self.decisions += 1
        self.spacing.decided(stamp)
        sample_ms = out.sample_ms + (delay if delay > 0 else 0.0)
        for name, ms in (("obs_age", 1e3 * age), ("inputs", 1e3 * (t0 - t_in)), ("encode", out.encode_ms),
                         ("sample", sample_ms), ("wm_encode", out.wm_encode_ms),
                         ("total", 1e3 * (t2 - t0))):  # total: with the pipe, if any
            self.stage_ms[name].append(ms)
        if self.budget is not None:  # the world model's encoder pass counts as encoding
            self.budget.record({"encode": out.encode_ms + out.wm_encode_ms, "sample": sample_ms})
        self.pub.publish(self._message(msg, out.obs_latent, out.actions, out.future_latents, seed, out.wm_latent))
        self.stage_ms["publish"].append(1e3 * (time.perf_counter() - t2))  # build + serialize + hand to DDS

    def _restart_sampler(self) -> None:
        try:
            self.backend.restart()
            self.get_logger().warn(f"sampler process restarted: {self.backend.describe()}")
        except SamplerProcessError as exc:
            self.get_logger().error(f"sampler process restart failed (will retry on the next observation): {exc}")

    def _inputs(self, msg: Observation) -> tuple[np.ndarray, np.ndarray]:
        by_name = dict(zip(msg.camera_names, msg.images))
        missing = [c for c in self.spec.cameras if c not in by_name]
        if missing:
            raise ValueError(f"observation lacks camera(s) {missing} (has {list(msg.camera_names)})")
        size = self.spec.image_size
        imgs = []
        for cam in self.spec.cameras:
            im = by_name[cam]
            if im.encoding != "rgb8" or im.height != size or im.width != size or len(im.data) != size * size * 3:
                raise ValueError(f"camera {cam}: expected {size}x{size} rgb8, got {im.width}x{im.height} {im.encoding}")
            imgs.append(np.frombuffer(bytes(im.data), np.uint8).reshape(size, size, 3).transpose(2, 0, 1))
        state = np.asarray(msg.state, np.float32)
        if state.shape != (self.spec.state_dim,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be {self.spec.state_dim} finite values, got {state.tolist()}")
        return np.stack(imgs)[None].astype(np.float32) / 255.0, state[None]

    def _message(self, obs: Observation, z: np.ndarray, actions: np.ndarray, future: np.ndarray,
                 seed: int, wm_latent: np.ndarray) -> ActionCandidates:
        k, h, a = actions.shape
        m, d = (future.shape[1], future.shape[2]) if future.ndim == 3 else (0, z.shape[-1])
        out = ActionCandidates(k=k, h=h, a=a, action_names=list(self.profile.action.names), actions=f32(actions),
                               obs_latent=f32(z), wm_latent=f32(wm_latent), m=m, latent_dim=d,
                               future_latents=f32(future), seed=seed, instruction=self.instruction or "",
                               policy_id=self.policy_id)
        out.header = obs.header
        return out

    def _drop(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.diag.warn(message)

    def _diagnostics(self) -> None:
        values: dict[str, object] = {"decisions": self.decisions, **self.counts,
                                     **(self.budget.values() if self.budget is not None else {})}
        for name, ms in self.stage_ms.items():
            if ms:
                values[f"{name}_ms_p50"] = float(np.median(ms))
                values[f"{name}_ms_max"] = float(np.max(ms))
        self.diag.publish(values, "sampling candidates" if self.active else "inactive")


def main(args: list[str] | None = None) -> None:
    run(VlaNode, args)


if __name__ == "__main__":
    main()
