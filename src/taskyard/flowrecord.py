"""The few calls the flow engine makes to record a flow run and make it cancellable.

::

    Flow._prepare ── begin() ── registered for cancellation (cancelling.py)
                             └─ recorder.start_run (when TASKYARD_RECORD is on)
    runner shut down ── end() ── final state + every task run written; unregistered
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from taskyard import cancelling
from taskyard.context import FlowRunInfo, flow_run_var, task_run_var
from taskyard.states import State

if TYPE_CHECKING:
    from taskyard.dispatch import Dispatcher
    from taskyard.settings import Settings
    from taskyard.store.recorder import Recorder

__all__ = ("preset_run", "take_preset", "begin", "end", "flow_source")

logger = logging.getLogger("taskyard.store")

# (id, name or None) for the next flow run started in this context: how a
# process started by taskyard.runs.start_flow_run runs the flow under the id
# it made, and how `taskyard run` knows the id to print.
preset_run: ContextVar[tuple[str, str | None] | None] = ContextVar("taskyard_preset_run", default=None)


def take_preset() -> tuple[str, str | None] | None:
    """The preset id and name, once: a subflow of that run gets its own."""
    preset = preset_run.get()
    if preset is not None:
        preset_run.set(None)
    return preset


class _LogRecorder(logging.Handler):
    """Sends the records of taskyard's loggers made for a recorded flow run to its recorder."""

    taskyard_internal = True  # not a user's logging configuration (taskyard.console)

    def __init__(self) -> None:
        super().__init__()
        self.recorders: dict[str, Recorder] = {}

    def emit(self, record: logging.LogRecord) -> None:
        last_resort = logging.lastResort
        if last_resort is not None and record.levelno >= last_resort.level and not self._others(record.name):
            # Being a handler must not silence what Python prints when a
            # logger has none (warnings and errors to stderr).
            last_resort.handle(record)
        if getattr(record, "taskyard_from_store", False) or not self.recorders:
            return
        run_id = getattr(record, "flow_run_id", None)
        if run_id is None:
            current = flow_run_var.get()
            run_id = current.id if current is not None else None
        recorder = self.recorders.get(run_id) if run_id is not None else None
        if recorder is not None:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            task_run = getattr(record, "task_run_id", None)
            recorder.log(run_id, task_run, record.created, record.levelno, record.name, message)  # type: ignore[arg-type]


    def _others(self, name: str) -> bool:
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False


_log_recorder = _LogRecorder()


def begin(flow: Any, info: FlowRunInfo, dispatcher: Dispatcher, settings: Settings) -> None:
    """A flow run starts: make it cancellable and, if recording is on, record it."""
    parent_flow = flow_run_var.get()
    parent_task = task_run_var.get()
    cancelling.register(info.id, dispatcher, parent_flow.id if parent_flow else None)
    if not settings.record:
        return
    from taskyard.store.recorder import recorder_for

    recorder = recorder_for(settings.home)
    dispatcher.recorder = recorder
    run_id = info.id
    recorder.start_run(
        info,
        task_runner=dispatcher.runner.name or type(dispatcher.runner).__name__,
        parent_task_run_id=parent_task.id if parent_task else None,
        parent_flow_run_id=parent_flow.id if parent_flow else None,
        source=flow_source(flow),
        on_cancel=lambda reason: cancelling.cancel_here(run_id, reason),
    )
    _log_recorder.recorders[run_id] = recorder
    taskyard_logger = logging.getLogger("taskyard")
    if _log_recorder not in taskyard_logger.handlers:
        taskyard_logger.addHandler(_log_recorder)


def end(dispatcher: Dispatcher, info: FlowRunInfo, state: State[Any]) -> None:
    """The flow run ended with ``state``: write it and every task run, then forget the run."""
    cancelling.unregister(info.id)
    recorder = dispatcher.recorder
    if recorder is None:
        return
    _log_recorder.recorders.pop(info.id, None)
    try:
        recorder.finish(info.id, state)
    except Exception:
        logger.exception("recording the end of flow run %r failed", info.name)


def flow_source(flow: Any) -> str | None:
    """Where the flow can be loaded from again: ``module:name`` or ``/path/file.py:name``."""
    fn = flow.fn
    name = getattr(fn, "__qualname__", "")
    if not name or "<" in name or "." in name:
        return None
    module = getattr(fn, "__module__", None) or ""
    loaded = sys.modules.get(module)
    if loaded is None or module.startswith("<"):
        return None  # rebuilt from a pickle
    if module.startswith("__taskyard_flow_"):  # loaded from a path (taskyard run file.py:flow)
        path = getattr(loaded, "__file__", None)
        return f"{path}:{name}" if path else None
    if module != "__main__":
        return f"{module}:{name}"
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return f"{path}:{name}" if path and os.path.isfile(path) else None
