"""Enqueueing deferred task runs: what ``apply_async``, ``delay`` and ``map(deferred=True)`` do.

::

    bound parameters (+ wait_for)
      │ futures found in them:
      │   deferred ones → the run waits for them in the queue (a worker claims
      │                   it once they are final; NotReady if one failed)
      │   local ones (a flow's submit) → waited for here; their final states
      │                   travel with the run
      │ the call pickled (cloudpickle) ← an argument that will not pickle is
      │                                  named here, before anything is written
      ▼
    one transaction: Pending rows (store.taskqueue.enqueue) → DeferredFutures
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskyard.context import current_tags, flow_run_var
from taskyard.deferred.future import DeferredFuture, deferred_home
from taskyard.dispatch import new_run_id
from taskyard.exceptions import UnpicklableArgumentError
from taskyard.futures import TaskFuture
from taskyard.inputs import Upstream, find_upstreams
from taskyard.store.codec import dumps_json
from taskyard.store.db import connect
from taskyard.store.taskqueue import QueuedRun, enqueue

if TYPE_CHECKING:
    from taskyard.tasks import Task

__all__ = ("enqueue_runs",)


def enqueue_runs(task: Task[..., Any], param_sets: Sequence[tuple[dict[str, Any], int]], wait_for: Any = None) -> list[DeferredFuture[Any]]:
    """Record one Pending deferred run per ``(parameters, map_index)`` and return their futures.

    Raises:
        UnpicklableArgumentError: An argument cannot be pickled (it is named).
    """
    import cloudpickle

    home = deferred_home()
    shared: list[Upstream] = find_upstreams(wait_for) if wait_for is not None else []
    flow_run = flow_run_var.get()
    tags = dumps_json(sorted(current_tags() | task.tags))
    runs: list[QueuedRun] = []
    futures: list[DeferredFuture[Any]] = []
    for params, map_index in param_sets:
        ups = find_upstreams(params) + shared
        waits: list[str] = []
        states: dict[str, Any] = {}
        for future, _ in ups:
            if isinstance(future, DeferredFuture):
                waits.append(future.task_run_id)
            elif isinstance(future, TaskFuture):
                future.wait()
                states[future.task_run_id] = future.state
        run_id = new_run_id()
        name = task.run_name(params, run_id)
        call = {
            "parameters": params,
            "upstreams": [(getattr(f, "task_run_id", None), getattr(f, "task_run_name", ""), may_fail) for f, may_fail in ups],
            "states": states,
        }
        try:
            blob = cloudpickle.dumps(call)
        except Exception:
            raise _unpicklable(task, name, params) from None
        runs.append(
            QueuedRun(
                run_id, name, task.name, blob, dumps_json(params), tags, map_index,
                flow_run.id if flow_run is not None else None, tuple(dict.fromkeys(waits)),
            )
        )  # fmt: skip
        futures.append(DeferredFuture(run_id, name, home))
    with _connection(home) as conn:
        enqueue(conn, runs)
    return futures


def _unpicklable(task: Task[..., Any], name: str, params: dict[str, Any]) -> UnpicklableArgumentError:
    import cloudpickle

    for key, value in params.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return UnpicklableArgumentError(
                f"argument {key!r} of deferred task run {name!r} cannot be pickled to store it for a task worker "
                f"({type(exc).__name__}: {exc}); pass something picklable (or its path, id or URL)"
            )
    return UnpicklableArgumentError(f"the arguments of deferred task run {name!r} of task {task.name!r} cannot be pickled")


_lock = threading.Lock()
_conns: dict[tuple[int, Path], sqlite3.Connection] = {}


@contextlib.contextmanager
def _connection(home: Path) -> Iterator[sqlite3.Connection]:
    """This process's connection to the store of ``home``, used by one thread at a time."""
    key = (os.getpid(), home)  # a forked child opens its own
    with _lock:
        conn = _conns.get(key)
        if conn is None:
            conn = _conns[key] = connect(home)
        yield conn
