"""SequentialTaskRunner: runs each call at submission, in the submitting thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskyard.runners.base import Cancelled, TaskCall, TaskFuture, TaskRunner, local_capacity, run_call

__all__ = ("SequentialTaskRunner",)


class SequentialTaskRunner(TaskRunner[TaskFuture[Any]]):
    """Runs every call at once, in the thread that submits it.

    Deterministic and free of concurrency: the runner for debugging and for
    users' unit tests. ``submit`` returns a future that is already done.

    Args:
        resources: Capacities the runs' resource requests are checked
            against (``{"gpu": 1}``); ``cpu`` defaults to 1, ``memory`` to
            this machine's. See docs/resources.md.
    """

    name = "sequential"
    concurrent = False

    def __init__(self, resources: Mapping[str, float | str] | None = None) -> None:
        self.resources = local_capacity(resources, 1)

    def resource_capacity(self) -> Mapping[str, float]:
        return self.resources

    def submit(self, call: TaskCall[Any]) -> TaskFuture[Any]:
        self.check_open()
        future: TaskFuture[Any] = TaskFuture(call.task_run.id, call.task_run.name)
        try:
            future._set_state(run_call(call))
        except BaseException:  # Ctrl-C: the run ends Cancelled and the interrupt goes on
            future._set_state(Cancelled(f"{call.task_run.name!r} was interrupted"))
            raise
        return future

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        self.begin_shutdown()
