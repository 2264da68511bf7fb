"""ThreadPoolTaskRunner: calls run on a pool of threads in the flow's process.

::

    submit/map ──append──▶ deque of batches ──claim next index──▶ worker threads
                  │          (calls, futures)                   │ run_call(call)
                  └─ wake an idle worker / start one            └─ future._set_state

The pool is the runner's own rather than a ``ThreadPoolExecutor``: a map of
10,000 calls is one batch on the queue and one wake-up, with no executor
Future and no queue entry per call, which keeps the per-task overhead near
the raw pool's. Workers claim a batch's calls by index from one counter
(``next`` on an ``itertools.count`` cannot be interrupted by another
thread), and a claimed call is dropped from its batch, so a run's call,
parameters and identity can be freed once it ran, not when its map ends. Calls are
only ever submitted once their upstreams are done (the dispatcher does that
with callbacks), so no worker ever blocks waiting for another run.
"""

from __future__ import annotations

import itertools
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
        self._queue: deque[_Batch] = deque()
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
        self._queue.append(_Batch([call], [future]))
        self._wake(1)
        return future

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[TaskFuture[Any]]:
        self.check_open()
        futures: list[TaskFuture[Any]] = [TaskFuture(c.task_run.id, c.task_run.name) for c in calls]
        if futures:
            self._queue.append(_Batch(list(calls), futures))
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
                    batch = self._queue.popleft()
                    while (claimed := batch.claim()) is not None:
                        dropped.append(claimed[1])
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
                batch = queue[0]
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
            claimed = batch.claim()
            if claimed is None:  # every call of the batch is claimed: drop it, once
                with cond:
                    if queue and queue[0] is batch:
                        queue.popleft()
                continue
            call, future = claimed
            if future._state is not None:  # cancelled while queued
                continue
            current[me] = future
            try:
                state = run_call(call)
            except BaseException as exc:  # a worker thread must outlive any one call
                state = Crashed(f"{call.task_run.name!r} was interrupted in its worker thread: {exc!r}")
            del current[me]
            future._set_state(state)


class _Batch:
    """Calls handed to the pool together, claimed by the workers one index at a time."""

    __slots__ = ("calls", "futures", "claims", "size")

    def __init__(self, calls: list[TaskCall[Any] | None], futures: list[TaskFuture[Any]]) -> None:
        self.calls = calls  # the runner's own list: a claimed call leaves it
        self.futures = futures
        self.claims = itertools.count()
        self.size = len(calls)

    def claim(self) -> tuple[TaskCall[Any], TaskFuture[Any]] | None:
        """The next call nobody claimed yet, and its future; None once all are claimed.

        Safe from any thread without a lock: each index comes out of the
        counter once.
        """
        at = next(self.claims)
        if at >= self.size:
            return None
        call, self.calls[at] = self.calls[at], None
        return call, self.futures[at]  # type: ignore[return-value]  # claimed once: never None here
