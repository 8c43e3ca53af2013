"""world_model_node (lifecycle): ranks ActionCandidates with the student world model (GPC-RANK), optionally refines
the chosen chunk by gradient steps through it (GPC-OPT: `gpc_opt`, torch backend only, within `gpc_opt_budget_ms` /
`gpc_opt_steps` and a `gpc_opt_trust` region; RankingResult ranker "gpc_opt" with a "gpc_opt" stage), publishes
RankingResult, and streams the chosen chunk through the chunk executor and the safety filter to the robot.

Outputs per robot profile at the control rate: arm -> `command_interface` `position_commands` (Float64MultiArray on
the forward position controller + gripper controller) or `joint_trajectory` (JointTrajectory, one point per command,
on the profile's joint_trajectory_controller; the gripper stays on its position controller); quadruped ->
TwistStamped/Twist on cmd_vel (zero on stop). Commands carry the observation stamp of the chunk they come from:
TwistStamped and JointTrajectory in header.stamp, Float64MultiArray in layout.dim[0].label ("obs_stamp_ns=<ns>");
0 while holding (see node_common/commands.py). Inputs: joint_states (NaN/short rejected with a diagnostic), the
observation stream (stale-observation watchdog), e_stop (std_msgs/Bool: True locks motion until False); candidates
that stop arriving mid-task (`candidate_timeout_s`) give a WARN diagnostic.
/diagnostics: per-stage ms, camera->command latency, control rate, deadline misses, safety interventions.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import Counter, deque

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from wm_vla_interfaces.msg import ActionCandidates, Observation, RankingResult

from node_common.commands import CommandOutputs, checked_joint_state
from node_common.budget import BUDGET_PARAMETERS, NodeBudget
from node_common.diagnostics import ERROR, Diagnostics
from node_common.lifecycle import ModelNode, default_checkpoint
from node_common.msgs import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, f32, to_ns, to_s
from node_common.spin import run
from node_common.worker import WM_WORKER_PARAMETERS, NewestWorker
from perception_node.node import OBSERVATION_TOPIC
from vla_node.node import CANDIDATES_TOPIC
from wm_vla.robots import load_profile
from wm_vla.models.checkpoint import check_world_model_encoder
from wm_vla.models.errors import ModelError
from wm_vla.runtime.decision import warm_up
from wm_vla.runtime.errors import ChunkError, LatencyConfigError, RankerError, RuntimeErrorBase
from wm_vla.runtime.executor import ChunkExecutor, ExecutorConfig
from wm_vla.runtime.ranker import (DEFAULT_SWITCH_MARGIN, GRADIENT_BACKENDS, ChunkRefiner, KinematicPenalty,
                                   RankerConfig, score_candidates)
from wm_vla.runtime.safety import SafeCommand, SafetyFilter
from wm_vla.training.pipeline import is_shipped, resolve_wm_encoder

RANKING_TOPIC = "/wm_vla/ranking_result"
WARM_UP_K = 16  # candidates in the configure-time warm-up rollout (the shipped stack's K)


# (name, default): the node's ROS parameters (params files, `wm-vla latency tune` output)
PARAMETERS: list[tuple[str, object]] = [
    ("robot", "arm"), ("backend", "torch"), ("device", "cpu"), ("policy", ""), ("world_model", ""),
    # the policy whose encoder the world model was trained in, when not the acting policy (its latent arrives as
    # ActionCandidates.wm_latent; it also sets the world model's action normalisation): "" = the shipped world model's
    # encoder when the shipped world model is in use, "none" = the acting policy's latent (obs_latent)
    ("wm_encoder", ""),
    ("onnx_dir", ""), ("threads", 1), ("rank", True), ("switch_margin", DEFAULT_SWITCH_MARGIN), ("control_rate_hz", 0.0),
    ("action_dt", 0.0), ("blend_s", 0.0), ("interpolate", False), ("velocity_scale", 1.0),
    ("max_acceleration", 0.0), ("max_obs_age_ms", 0.0), ("candidates", CANDIDATES_TOPIC),
    ("observation", OBSERVATION_TOPIC), ("ranking", RANKING_TOPIC), ("candidate_timeout_s", 2.0),
    ("control_rt_priority", 0),
    # GPC-OPT: refine the ranked chunk by gradient steps through the student WM (torch backend only: configure refuses
    # onnxruntime / tensorrt, which give no gradients); budget per decision, Adam steps, trust region in action stds
    ("gpc_opt", False), ("gpc_opt_budget_ms", 10.0), ("gpc_opt_steps", 20), ("gpc_opt_lr", 0.05),
    ("gpc_opt_trust", 0.5),
    # joint robots: position_commands (forward controllers) | joint_trajectory (JTC + gripper position controller)
    ("command_interface", "position_commands"),
    # live latency budget on the ranking (node_common.budget): K levels -> passthrough, recovery with hysteresis
    *BUDGET_PARAMETERS,
    # ranking thread's added nice value (node_common.worker; 0: it shares the GIL with the control thread)
    *WM_WORKER_PARAMETERS,
    # fault injection (tests, drills): extra ms inside the world-model stage; settable at run time
    ("inject_wm_delay_ms", 0.0)]


class WorldModelNode(ModelNode):
    def __init__(self) -> None:
        super().__init__("world_model_node")
        self.declare_parameters("", PARAMETERS)
        self.lock = threading.Lock()
        self.budget: NodeBudget | None = None
        self.counts: Counter[str] = Counter()
        self.stage_ms: dict[str, deque[float]] = {}
        self.latency_ms: deque[float] = deque(maxlen=1000)
        self.tick_times: deque[float] = deque(maxlen=200)
        self.chunk_stamp_ns = 0
        self.reported_ns = 0
        self.deadline_misses = 0
        self.control_ticks = 0        # cumulative: the achieved rate over any window is its difference / time
        self.control_gap_max = 0.0    # longest interval between ticks (s) since the last /diagnostics message
        self.last_candidates: float | None = None  # monotonic s of the task's latest candidates (None: none yet)
        # the task from the latched instruction topic (None: none received yet), and the instructions of the chunks
        # handed to the executor before it came: at start-up the candidates can arrive before the latched
        # instruction does (discovery order), and the chunks vla_node computed for that same first task are kept
        self.task: str | None = None
        self.untasked_instructions: set[str] = set()
        self.command_state: tuple[str, tuple[str, ...]] = ("", ())
        # wall time: the ranking thread leaves its chosen chunk here and wakes the control thread, which submits it
        # (a low-priority thread never holds the command lock the control loop needs: no priority inversion)
        self.pending: tuple[np.ndarray, int] | None = None
        self.wake = threading.Event()

    # ----- lifecycle -----
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from wm_vla.runtime.loading import open_backend

        prof = self.profile = load_profile(self.p("robot"))
        self.rank = bool(self.p("rank"))
        self.refiner: ChunkRefiner | None = None
        if self.p("gpc_opt") and (not self.rank or self.p("backend") not in GRADIENT_BACKENDS):
            return self.refuse(f"gpc_opt needs rank: true and backend {list(GRADIENT_BACKENDS)} (gradients through the "
                               f"world model), got rank: {str(self.rank).lower()}, backend: {self.p('backend')!r}")
        self.wm_encoder: str | None = None
        if self.rank:
            self.wm_encoder = resolve_wm_encoder(self.p("wm_encoder"), is_shipped(self.p("world_model")),
                                                 self.p("robot"))
            world_model = self.p("world_model") or default_checkpoint(1)
            latent_policy = self.wm_encoder or self.p("policy") or default_checkpoint(0)
            try:
                check_world_model_encoder(world_model, latent_policy)
                # an onnx_dir given with a wm_encoder must be that encoder's export (`wm-vla export --policy ENCODER`)
                sel = open_backend(self.p("backend"), latent_policy, world_model, self.p("onnx_dir") or None,
                                   self.p("device"), self.p("threads") or None)
            except (RuntimeErrorBase, ModelError, OSError, ValueError) as exc:
                return self.refuse(f"cannot load the world model: {exc}")
            self.backend = sel.backend
            if self.backend.spec.action_dim != len(prof.action.names):
                return self.refuse(f"the models (action {self.backend.spec.action_dim}) do not fit robot {prof.name} "
                                   f"(action {len(prof.action.names)})")
            try:  # the first ranking would otherwise pay for lazy initialisation
                warm_up(self.backend, WARM_UP_K, sample=False)
            except (RuntimeErrorBase, ValueError) as exc:
                return self.refuse(f"the world model does not run on blank candidates: {exc}")
        self.ranker_cfg = RankerConfig(switch_margin=float(self.p("switch_margin")))
        if self.p("gpc_opt"):
            try:
                self.refiner = ChunkRefiner(self.backend, self.ranker_cfg, float(self.p("gpc_opt_budget_ms")),
                                            int(self.p("gpc_opt_steps")), float(self.p("gpc_opt_lr")),
                                            float(self.p("gpc_opt_trust")))
                self.refiner.warm_up()
            except RankerError as exc:
                return self.refuse(str(exc))
        self.diag = Diagnostics(self, "world_model")
        try:
            self.budget = NodeBudget.from_node(self, self.diag, gpc_opt=self.refiner is not None)
        except LatencyConfigError as exc:
            return self.refuse(f"bad latency budget settings: {exc}")
        self.penalty = KinematicPenalty(prof)
        rate = self.p("control_rate_hz") or prof.control_rate_hz
        self.control_dt = 1.0 / rate
        self.chunks = ChunkExecutor(ExecutorConfig(self.p("action_dt") or 1.0 / prof.policy_rate_hz,
                                                     len(prof.action.names), None, self.p("blend_s"),
                                                     self.p("interpolate")))
        accel = self.p("max_acceleration") or None
        age = (self.p("max_obs_age_ms") or prof.max_obs_age_ms) / 1e3
        self.safety = SafetyFilter.for_profile(prof, self.control_dt, velocity_scale=self.p("velocity_scale"),
                                               max_acceleration=accel, max_obs_age_s=age)
        try:
            self._outputs()
        except ValueError as exc:
            return self.refuse(str(exc))
        self.rank_pub = self.create_lifecycle_publisher(RankingResult, self.p("ranking"), COMMAND_QOS)
        self.worker = NewestWorker(self._rank, "world_model_ranking", self._worker_failed, int(self.p("worker_nice")))
        self.create_subscription(ActionCandidates, self.p("candidates"), self._on_candidates, COMMAND_QOS)
        self.create_subscription(Observation, self.p("observation"), self._on_obs, SENSOR_QOS)
        self.create_subscription(Bool, prof.topics.e_stop, self._on_e_stop, LATCHED_QOS)
        self.create_subscription(String, prof.topics.instruction, self._on_instruction, LATCHED_QOS)
        if prof.action.kind == "joint_position":
            self.create_subscription(JointState, prof.topics.joint_states, self._on_joint_state, SENSOR_QOS)
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        if self.sim_time:  # the control rate follows the sim's /clock
            self.create_timer(self.control_dt, self._control)
        self.create_timer(1.0, self._diagnostics)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """On wall time the control loop is a dedicated thread on a monotonic schedule: the executor's threads, busy
        with candidates, observations and joint states, then never delay a tick (rclpy timers jitter under load)."""
        ret = super().on_activate(state)
        if not self.sim_time:
            self.control_stop = threading.Event()
            self.pending = None
            self.control_thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
            self.control_thread.start()
        return ret

    def destroy_node(self) -> None:
        if getattr(self, "control_thread", None) is not None:
            self.control_stop.set()
            self.wake.set()
            self.control_thread.join(1.0)
        super().destroy_node()

    def _realtime(self) -> None:
        """With `control_rt_priority` > 0 (opt-in: on a dedicated robot computer), SCHED_FIFO for the control thread
        when allowed (root / CAP_SYS_NICE / rtprio limit), as ros2_control's controller manager does, and a shorter
        GIL switch interval. Otherwise it runs at normal priority (said once when the request is refused). Either way
        the GIL is handed over every 1 ms (not 5): a woken control tick waits at most that long for the I/O thread."""
        sys.setswitchinterval(0.001)
        prio = int(self.p("control_rt_priority"))
        if prio <= 0 or not hasattr(os, "sched_setscheduler"):
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(prio))
            self.get_logger().info(f"control thread: SCHED_FIFO priority {prio}")
        except OSError as exc:
            self.get_logger().warning(f"control thread without real-time priority ({exc.strerror}): expect deadline "
                                      "misses on a loaded machine")

    def _control_loop(self) -> None:
        """Ticks on a monotonic schedule; a freshly ranked chunk (`pending`) wakes the loop between ticks so that its
        first command goes out at once, without moving the schedule."""
        self._realtime()
        gc.freeze()  # the models and ROS objects loaded so far are never scanned again: shorter collector pauses
        due = time.monotonic()
        while not self.control_stop.is_set() and self.context.ok():
            due += self.control_dt
            late = time.monotonic() - due
            if late > self.control_dt:  # far behind (the process was stalled): restart the schedule, no burst
                due = time.monotonic()
            # always yield a little: an overrunning loop (a real-time thread above all) never starves the machine
            wait = max(-late, 0.001)
            while self.wake.wait(wait) and not self.control_stop.is_set():
                self.wake.clear()
                if self.active:
                    self._take_pending(self.get_clock().now().nanoseconds * 1e-9)
                wait = due - time.monotonic()
                if wait <= 0:
                    break
            if self.active:
                try:
                    self._control()
                except Exception:
                    if self.context.ok():
                        raise
                    return  # SIGINT shut the context down under this tick: nothing can be published any more

    def _take_pending(self, now: float) -> None:
        """Submit the chunk the ranking thread left (if any) and command its first action at `now`."""
        pending, self.pending = self.pending, None
        if pending is not None and self._submit(pending[0], pending[1], now):
            self._step(now)

    def _submit(self, chunk: np.ndarray, stamp_ns: int, now: float) -> bool:
        with self.lock:
            try:
                self.chunks.submit(chunk, stamp_ns * 1e-9, now)
                self.chunk_stamp_ns = stamp_ns
                return True
            except ChunkError as exc:
                self.counts["rejected_chunks"] += 1
                self.diag.warn(f"chunk not executed: {exc}")
                return False

    def _outputs(self) -> None:
        self.out = CommandOutputs(self, self.profile, self.create_lifecycle_publisher, str(self.p("command_interface")),
                                  self.control_dt)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.lock:
            self.chunks.clear()
        if not self.sim_time:
            self.control_stop.set()
            self.wake.set()
            self.control_thread.join(1.0)
        return super().on_deactivate(state)

    # ----- inputs -----
    def _on_e_stop(self, msg: Bool) -> None:
        with self.lock:
            self.safety.set_e_stop(msg.data)
            if msg.data:
                self.chunks.clear()  # a released e-stop waits for a fresh chunk
                self.pending = None
        self.get_logger().warning(f"e_stop {'ENGAGED' if msg.data else 'released'}")

    def _on_instruction(self, msg: String) -> None:
        with self.lock:  # a new task: nothing computed for (or measured in) the previous one is commanded
            self.counts["instructions"] += 1
            first_task_of_its_chunks = self.task is None and self.untasked_instructions == {msg.data}
            self.task = msg.data
            self.untasked_instructions.clear()
            if not first_task_of_its_chunks:
                self.chunks.clear()
                self.pending = None
                self.safety.reset()
                self.last_candidates = None
        if first_task_of_its_chunks:  # no earlier task exists whose chunks could still be commanded
            self.get_logger().info(f"first task {msg.data!r} arrived after candidates computed for it: chunks kept")
        else:
            self.get_logger().info(f"new task {msg.data!r}: pending chunks cleared")

    def _on_obs(self, msg: Observation) -> None:
        # no lock: one attribute store (atomic under the GIL); an I/O thread preempted while holding the command
        # lock would stall the real-time control thread (priority inversion)
        self.safety.observation(to_s(msg.header.stamp))

    def _on_joint_state(self, msg: JointState) -> None:
        q = checked_joint_state(msg, self.profile.action.names, self.counts, self.diag)
        if q is not None:
            self.safety.joint_state(q)  # no lock, as in _on_obs

    def _on_candidates(self, msg: ActionCandidates) -> None:
        if not self.active or self.worker is None:
            return
        self.last_candidates = time.monotonic()
        if self.worker.submit((msg, self.get_clock().now().nanoseconds, time.perf_counter())):
            self.counts["skipped_candidates"] += 1  # a newer set arrived before ranking this one started

    def _worker_failed(self, exc: BaseException) -> None:
        self.counts["ranking_errors"] += 1
        self.diag.warn(f"ranking failed, nothing new executed: {type(exc).__name__}: {exc}", ERROR)

    def _rank(self, item: tuple[ActionCandidates, int, float]) -> None:
        """Rank (worker thread), hand the chosen chunk to the executor, publish the RankingResult. `item`: the
        candidates, their arrival (node clock ns) and arrival (perf_counter s), for the published stage times."""
        if not self.active:
            return
        msg, arrived_ns, arrived = item
        t0 = time.perf_counter()
        try:
            actions, z = self._decode(msg)
        except ValueError as exc:
            self.counts["rejected_candidates"] += 1
            self.diag.warn(f"candidates rejected: {exc}", ERROR)
            return
        t1 = time.perf_counter()
        stages = {"decode": 1e3 * (t1 - t0)}
        chosen, ranker, degraded = 0, "passthrough", not self.rank
        chunk: np.ndarray | None = None  # the GPC-OPT refinement of the chosen candidate, when it ran
        scores = progress = failure = np.zeros(0)
        mode = self.budget.mode if self.budget is not None else None
        if mode is not None and not mode.rank:
            degraded = True  # over budget: the policy's first sample, no world model
        elif self.rank and self.backend is not None and actions.shape[0] > 1:
            ranked = actions[: mode.k] if mode is not None else actions  # candidate 0 always stays in
            try:
                roll = self.backend.rollout(z, ranked)
                delay = float(self.p("inject_wm_delay_ms"))
                if delay > 0:
                    time.sleep(delay / 1e3)
                t2 = time.perf_counter()
                r = score_candidates(roll.progress, roll.failure_prob, ranked, self.penalty, self.ranker_cfg)
                stages.update(wm_rollout=1e3 * (t2 - t1), score=1e3 * (time.perf_counter() - t2))
                chosen, ranker, scores, progress, failure = r.chosen, "gpc_rank", r.scores, r.progress, r.failure_prob
                degraded = ranked.shape[0] < actions.shape[0]
                if self.refiner is not None and (mode is None or mode.gpc_opt):
                    t3 = time.perf_counter()
                    chunk, _ = self.refiner(z, actions[chosen])  # GPC-OPT; the safety filter still follows
                    stages["gpc_opt"], ranker = 1e3 * (time.perf_counter() - t3), "gpc_opt"
            except RuntimeErrorBase as exc:
                degraded = True
                self.diag.warn(f"world model failed, passing the policy's first sample through: {exc}")
        if self.budget is not None:
            self.budget.record({k: v for k, v in stages.items() if k != "decode"} or {"passthrough": 0.0})
        executed = actions[chosen] if chunk is None else chunk
        if self.task is None:  # before the first instruction: remember which task this chunk was computed for
            self.untasked_instructions.add(msg.instruction)
        if self.sim_time:  # the executor thread ticks the control timer: submit here, first command now
            now = self.get_clock().now().nanoseconds * 1e-9
            if self._submit(executed, to_ns(msg.header.stamp), now):
                self._step(now)
        else:  # hand over to the control thread, woken now (it submits and commands the first action)
            self.pending = (executed, to_ns(msg.header.stamp))
            self.wake.set()
        stages["total"] = 1e3 * (time.perf_counter() - t0)
        # where the decision's time went before ranking (not part of `total`, nor of the latency budget):
        # camera stamp -> candidates arrival (perception, vla_node, one DDS hop), then waiting for this worker
        stages["candidates_age"] = (arrived_ns - to_ns(msg.header.stamp)) / 1e6
        stages["queue"] = 1e3 * (t0 - arrived)
        for name, ms in stages.items():
            self.stage_ms.setdefault(name, deque(maxlen=200)).append(ms)
        k = scores.size or actions.shape[0]
        self.rank_pub.publish(RankingResult(
            header=msg.header, chosen=chosen, scores=f32(scores if scores.size else np.zeros(k)),
            progress=f32(progress), failure_prob=f32(failure), stage_names=list(stages),
            stage_ms=f32(np.array(list(stages.values()))),
            backend=self.backend.name if (self.backend is not None and ranker != "passthrough") else "none",
            ranker=ranker, degraded=degraded))

    def _decode(self, msg: ActionCandidates) -> tuple[np.ndarray, np.ndarray]:
        k, h, a = msg.k, msg.h, msg.a
        names = tuple(msg.action_names)
        if names != tuple(self.profile.action.names):
            raise ValueError(f"action_names {list(names)} differ from the robot's {list(self.profile.action.names)}")
        actions = np.frombuffer(msg.actions, np.float32)
        if k < 1 or h < 1 or actions.size != k * h * a:
            raise ValueError(f"actions has {actions.size} values for k={k}, h={h}, a={a}")
        z = np.frombuffer(msg.obs_latent, np.float32)
        if z.size != msg.latent_dim:
            raise ValueError(f"obs_latent has {z.size} values, latent_dim is {msg.latent_dim}")
        if self.rank:  # the latent the world model ranks in
            z = self._world_model_latent(msg, z)
        actions = actions.reshape(k, h, a)
        if not (np.all(np.isfinite(actions)) and np.all(np.isfinite(z))):
            raise ValueError("candidates or latent contain NaN/inf")
        return actions.astype(np.float64), z

    def _world_model_latent(self, msg: ActionCandidates, obs_latent: np.ndarray) -> np.ndarray:
        """wm_latent when this node's world model ranks in a wm_encoder's latent, else obs_latent; ValueError when
        vla_node and this node disagree on the encoder (it would rank in the wrong latent)."""
        wm_latent = np.frombuffer(msg.wm_latent, np.float32)
        if self.wm_encoder is None:
            if wm_latent.size:
                raise ValueError("the candidates carry a wm_latent (vla_node has a wm_encoder) but this node's world "
                                 "model ranks in the policy's latent: give both nodes the same wm_encoder")
            return obs_latent
        if not wm_latent.size:
            raise ValueError(f"the world model ranks in the latent of {self.wm_encoder} but the candidates carry no "
                             "wm_latent: give vla_node the same wm_encoder")
        want = self.backend.spec.latent_dim
        if wm_latent.size != want:
            raise ValueError(f"wm_latent has {wm_latent.size} values, the world model's latent has {want}")
        return wm_latent

    # ----- control loop -----
    def _control(self) -> None:
        """Control-rate tick (on the node's executor; ranking runs on the worker thread)."""
        if not self.active:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        if self.tick_times:
            gap = now - self.tick_times[-1]
            self.control_gap_max = max(self.control_gap_max, gap)
            if gap > 1.5 * self.control_dt:
                self.deadline_misses += 1
        self.tick_times.append(now)
        self.control_ticks += 1
        self._step(now)

    def _step(self, now: float) -> None:
        """Executor -> safety filter -> publish, at `now`."""
        with self.lock:
            cmd = self.safety.filter(self.chunks.target(now), now)
            lineage = self.chunk_stamp_ns if cmd.state == "track" else 0
            state = (cmd.state, cmd.reasons[:1] if cmd.state != "track" else ())
            if state != self.command_state:  # log transitions only (track <-> hold / stop, with the cause)
                self.command_state = state
                self.get_logger().info(f"command path: {cmd.state} {','.join(cmd.reasons)}".rstrip())
            if "stale_observation" in cmd.reasons or "e_stop" in cmd.reasons:
                self.chunks.clear()  # a chunk whose observation stream died (or that was stopped) is void
            self._publish(cmd, lineage)  # under the lock: control tick and worker never publish out of order
        if lineage and lineage != self.reported_ns:  # first command of a chunk: camera stamp -> command publish
            self.reported_ns = lineage
            self.latency_ms.append((self.get_clock().now().nanoseconds - lineage) / 1e6)

    def _publish(self, cmd: SafeCommand, lineage_ns: int) -> None:
        if cmd.values is not None:
            self.out.publish(cmd.values, lineage_ns)

    def _diagnostics(self) -> None:
        values: dict[str, object] = {**self.counts, "deadline_misses": self.deadline_misses,
                                     "control_ticks": self.control_ticks,
                                     "control_gap_ms_max": 1e3 * self.control_gap_max,
                                     "e_stop": int(self.safety.e_stop),
                                     **{f"safety_{k}": v for k, v in self.safety.counts.items()}}
        for name, ms in self.stage_ms.items():
            values[f"{name}_ms_p50"] = float(np.median(ms))
            values[f"{name}_ms_max"] = float(np.max(ms))
        if self.latency_ms:
            values["camera_to_command_ms_p50"] = float(np.percentile(self.latency_ms, 50))
            values["camera_to_command_ms_p99"] = float(np.percentile(self.latency_ms, 99))
        if len(self.tick_times) > 1:
            values["control_rate_hz"] = (len(self.tick_times) - 1) / (self.tick_times[-1] - self.tick_times[0])
        if self.budget is not None:
            values.update(self.budget.values())
        silent = time.monotonic() - self.last_candidates if self.last_candidates is not None else 0.0
        if silent > self.p("candidate_timeout_s"):  # candidates flowed in this task, then stopped: vla_node down?
            self.diag.warn(f"no candidates for {silent:.1f} s (is vla_node running?): holding once the chunk ends")
        self.control_gap_max = 0.0
        self.diag.publish(values, "streaming" if self.active else "inactive")


def main(args: list[str] | None = None) -> None:
    run(WorldModelNode, args)


if __name__ == "__main__":
    main()
