"""ThreadPoolTaskRunner: calls run on a pool of threads in the flow's process.

::

    submit/map ──append──▶ deque of (call, future) ──popleft──▶ worker threads
                  │                                             │ run_call(call)
                  └─ wake an idle worker / start one            └─ future._set_state

The pool is the runner's own rather than a ``ThreadPoolExecutor``: a map of
10,000 calls is one ``deque.extend`` and one wake-up, with no executor Future
per call, which keeps the per-task overhead near the raw pool's. Calls are
only ever submitted once their upstreams are done (the dispatcher does that
with callbacks), so no worker ever blocks waiting for another run.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from taskyard.runners.base import Cancelled, Crashed, TaskCall, TaskFuture, TaskRunner, local_capacity, run_call

__all__ = ("ThreadPoolTaskRunner",)


class ThreadPoolTaskRunner(TaskRunner[TaskFuture[Any]]):
    """Runs calls on up to ``max_workers`` threads (the default runner).

    Args:
        max_workers: Thread count; by default ``min(32, cpu_count + 4)``, as
            ``concurrent.futures.ThreadPoolExecutor`` chooses.
        resources: Capacities the runs' resource requests are kept within
            (``{"gpu": 1, "memory": "8 GiB"}``); ``cpu`` defaults to
            ``max_workers``, ``memory`` to this machine's. See docs/resources.md.
    """

    name = "threads"

    def __init__(self, max_workers: int | None = None, resources: Mapping[str, float | str] | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self.resources = local_capacity(resources, self.max_workers)
        self._queue: deque[tuple[TaskCall[Any], TaskFuture[Any]]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._current: dict[int, TaskFuture[Any]] = {}
        self._idle = 0
        self._closing = False

    def resource_capacity(self) -> Mapping[str, float]:
        return self.resources

    def submit(self, call: TaskCall[Any]) -> TaskFuture[Any]:
        self.check_open()
        future: TaskFuture[Any] = TaskFuture(call.task_run.id, call.task_run.name)
        self._queue.append((call, future))
        self._wake(1)
        return future

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[TaskFuture[Any]]:
        self.check_open()
        futures: list[TaskFuture[Any]] = [TaskFuture(c.task_run.id, c.task_run.name) for c in calls]
        self._queue.extend(zip(calls, futures, strict=True))
        self._wake(len(futures))
        return futures

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        if not self.begin_shutdown():
            return
        with self._cond:
            self._closing = True
            dropped = []
            if cancel_pending:
                while self._queue:
                    dropped.append(self._queue.popleft()[1])
                # A thread cannot be interrupted: its run ends Cancelled now
                # and whatever it returns later is discarded.
                dropped.extend(self._current.values())
            self._cond.notify_all()
        for future in dropped:
            future._set_state(Cancelled("the flow run was cancelled before this run finished"))
        if wait:
            for thread in self._threads:
                thread.join()

    def _wake(self, count: int) -> None:
        with self._cond:
            woken = min(count, self._idle)
            if woken:
                self._cond.notify(woken)
            for _ in range(min(count - woken, self.max_workers - len(self._threads))):
                thread = threading.Thread(target=self._work, name=f"taskyard-thread-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        queue, cond, current = self._queue, self._cond, self._current
        me = threading.get_ident()
        while True:
            try:
                call, future = queue.popleft()
            except IndexError:
                with cond:
                    if queue:
                        continue
                    if self._closing:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                continue
            if future._state is not None:  # cancelled while queued
                continue
            current[me] = future
            try:
                state = run_call(call)
            except BaseException as exc:  # a worker thread must outlive any one call
                state = Crashed(f"{call.task_run.name!r} was interrupted in its worker thread: {exc!r}")
            del current[me]
            future._set_state(state)
