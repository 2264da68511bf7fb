"""``submit``/``map`` inside a task run: a thread pool local to that run.

::

    task run (any runner: a pool thread, a process, a Dask or Ray worker)
      │ inner.submit(x) / inner.map(xs)
      ▼
    NestedScope ── created on the first submission, kept on the TaskRunInfo
      │ a Dispatcher over a ThreadPoolTaskRunner started here, in this process
      ▼
    the engine, when the task function returns: scope.close() waits for every
    run submitted in it (or cancels what has not started, if the task did
    not complete), then shuts the local pool down

The local pool is never the pool the task itself runs on, so a task that
waits for what it submitted cannot deadlock its runner, however busy that
is. The cost is one pool of threads per task run that submits (at most
``max_workers`` threads, started as needed), and the nested runs share the
CPU of the process the task runs in: the work does not fan out over a
cluster from there. Nested runs have their own engine: retries, timeouts,
caching and hooks apply to them as anywhere.
"""

from __future__ import annotations

import os

from taskyard.context import TaskRunInfo, flow_run_var
from taskyard.dispatch import Dispatcher
from taskyard.runners.threads import ThreadPoolTaskRunner

__all__ = ("NestedScope", "nested_dispatcher")

# Enough threads for the I/O-bound fan-out nested submissions usually are.
_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


class NestedScope:
    """The submissions of one task run, on a thread pool of its own."""

    def __init__(self) -> None:
        runner = ThreadPoolTaskRunner(max_workers=_MAX_WORKERS)
        runner.start()
        self.dispatcher = Dispatcher(runner, flow_run_var.get())

    def close(self, completed: bool) -> None:
        """Wait for every run submitted in the scope, then release the pool.

        Args:
            completed: False when the task failed: what has not started yet
                is cancelled instead of waited for.
        """
        runner = self.dispatcher.runner
        if completed:
            self.dispatcher.wait_all()
            runner.shutdown(wait=True)
        else:
            runner.shutdown(wait=False, cancel_pending=True)


def nested_dispatcher(info: TaskRunInfo) -> Dispatcher:
    """The dispatcher for submissions made inside the task run ``info``; created on first use."""
    scope = info.nested
    if scope is None:
        scope = info.nested = NestedScope()
    dispatcher: Dispatcher = scope.dispatcher
    return dispatcher
