"""Base of the model-owning lifecycle nodes: parameters, the active flag, backend release on cleanup."""

from __future__ import annotations

from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from node_common.worker import NewestWorker


def default_checkpoint(index: int) -> str:
    """0: the default policy, 1: the default student world model (`wm_vla.training.pipeline.default_checkpoints`)."""
    from wm_vla.training.pipeline import default_checkpoints

    return str(default_checkpoints()[index])


class ModelNode(LifecycleNode):
    """configure (subclass) loads the model into `self.backend` (and may start `self.worker` for the model calls);
    activate/deactivate gate the callbacks; cleanup stops the worker, then releases the backend."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.backend: Any = None
        self.worker: NewestWorker[Any] | None = None
        self.active = False
        self.configure_error = ""

    def refuse(self, message: str) -> TransitionCallbackReturn:
        """Log why configure fails (kept for the exit diagnostic) and fail the transition: the node never runs."""
        self.configure_error = message
        self.get_logger().error(message)
        if self.backend is not None:  # loaded before the check that failed (a sampler process, a GPU context)
            self.backend.close()
            self.backend = None
        return TransitionCallbackReturn.FAILURE

    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        return TransitionCallbackReturn.SUCCESS
