"""ProcessPoolTaskRunner: calls run in worker processes, shipped with cloudpickle.

::

    submit/map ─▶ pack_calls(batch) ─▶ queue ─▶ a worker with room (≤ 2 batches each)
                   │ (fails: Failed state naming          │ own pipes and shared pages per worker
                   │  the argument that won't pickle)     ▼
    futures ◀── one state per call, a page at a time ◀── worker process (process_worker.py)
       ▲
       └── a worker died: the states it left in its pages are read (no
           finished call is lost); the call it had started (the shared
           counter says whether it had) is lost — run again while its
           retries allow, then Crashed; the calls queued on it never
           started and are placed again; the other workers never notice.
           A fresh worker takes its place.

The runner assigns every batch to one worker, so it always knows which
calls a worker holds and which one it is running: a worker that dies costs
exactly its own run, and a call that kills every worker it touches ends
Crashed alone while the rest of the map keeps its parallelism.

This module places calls and shuts the runner down.
:mod:`taskyard.runners.process_pool` holds the calls in the runner's hands
and the handles on the workers, and starts and stops them;
:mod:`taskyard.runners.process_collector` is the thread that reads what the
workers send and judges a worker that died.

cloudpickle (not pickle) ships the calls, so tasks defined in ``__main__``,
in a notebook or as closures work. For the same reason the workers never
import the parent's ``__main__``: multiprocessing would otherwise re-run a
script without an ``if __name__ == "__main__"`` guard in every worker (and
fail outright for code read from stdin; see :mod:`taskyard.runners.mainless`). ``map`` sends calls in batches to
cut the per-call cost. Batches are cut as workers take them, sized by a
:class:`~taskyard.batching.BatchSizer` per task from how long the last
batches of that task ran: one call at first, then larger while calls are
short (aiming for ~0.1 s per batch), never so large that a worker would sit
idle at the end of the map. ``batch_size=`` (here or on the task) fixes the
size; each call still has its own state, written to shared memory as it
ends and handed to the flow process every few milliseconds
(:mod:`taskyard.runners.state_pages`).

Workers end with the flow process: each watches its pipe from the flow
process and exits when it closes, and (under the fork server) also gets a
parent-death signal. They ignore SIGINT and SIGTERM sent to the process
group: the flow process cancels their runs and stops them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from taskyard.exceptions import RunError
from taskyard.gcpause import collector_paused
from taskyard.runners.base import (
    BatchSizer,
    Cancelled,
    Crashed,
    State,
    TaskCall,
    TaskFuture,
    TaskRunner,
    check_batch_size,
    local_capacity,
    unpicklable_argument_error,
)
from taskyard.runners.process_collector import collect
from taskyard.runners.process_lanes import LaneSegment, LaneSent, as_calls, pack_range
from taskyard.runners.process_pool import Entry, Segment, Sent, Worker, start_worker
from taskyard.runners.process_worker import pack_calls, write_frame
from taskyard.runners.shared import SharedArguments
from taskyard.states import Failed

__all__ = ("ProcessPoolTaskRunner",)

_MAX_BATCH = 1024  # an adaptive batch never holds more calls than this
_MAX_LANE_BATCH = 4096  # nor a batch of a lane's calls (a few µs each)
_MIN_SECONDS = 0.002  # the end of a map is not cut into batches shorter than this
_PREFETCH = 2  # batches a worker holds: one running, one ready, so it never waits for the flow process

_Batch = tuple[Sent | LaneSent, bytes]
_Packed = tuple[Sent, bytes]


class ProcessPoolTaskRunner(TaskRunner[TaskFuture[Any]]):
    """Runs calls in up to ``max_workers`` worker processes.

    Args:
        max_workers: Process count; by default the number of CPUs.
        start_method: ``"forkserver"`` (default where available), ``"spawn"``
            or ``"fork"``.
        resources: Capacities the runs' resource requests are kept within
            (``{"gpu": 1, "memory": "8 GiB"}``); ``cpu`` defaults to
            ``max_workers``, ``memory`` to this machine's. See docs/resources.md.
        initializer: Called as ``initializer(*initargs)`` once in each worker
            process when it starts (as in ``concurrent.futures`` and Prefect);
            shipped with cloudpickle, so a function from ``__main__`` works.
            If it raises, the runs that were waiting for a worker end Crashed
            with its error.
        initargs: The arguments for ``initializer``.
        batch_size: Calls of a map per batch sent to a worker: None (default)
            adapts it to how long calls take, ``1`` sends one call at a time,
            ``N`` fixes it. A task's own ``batch_size`` wins. See docs/batching.md.
    """

    name = "processes"
    requires_pickling = True
    supports_cancel_running = True
    supports_lanes = True

    def __init__(
        self,
        max_workers: int | None = None,
        start_method: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        batch_size: int | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {initializer!r}")
        self.initializer, self.initargs = initializer, tuple(initargs)
        self.batch_size = check_batch_size(batch_size, "ProcessPoolTaskRunner")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.resources = local_capacity(resources, self.max_workers)
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, not {self.start_method!r}")
        self._lock = threading.Lock()
        self._queue: deque[Segment | LaneSegment] = deque()
        self._sizers: dict[tuple[int, bool], tuple[Any, BatchSizer]] = {}
        self._unsent: list[tuple[list[Entry], State[Any]]] = []  # failed while the lock was held
        self._workers: dict[int, Worker] = {}
        self._outstanding = 0
        self._closing = self._cancelling = False
        self._selector: selectors.BaseSelector | None = None
        self._wakeup: tuple[int, int] | None = None
        self._collector: threading.Thread | None = None
        self._shared = SharedArguments()
        self._initializer_error: str | None = None

    def resource_capacity(self) -> Mapping[str, float]:
        return self.resources

    def setup(self) -> None:
        self._ctx: Any = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            self._ctx.set_forkserver_preload(["taskyard.runners.process_worker"])
        self._init = None if self.initializer is None else cloudpickle.dumps((self.initializer, self.initargs))
        self._selector = selectors.DefaultSelector()
        self._wakeup = os.pipe()
        self._selector.register(self._wakeup[0], selectors.EVENT_READ, None)
        self._collector = threading.Thread(target=collect, args=(self,), name="taskyard-process-runner", daemon=True)
        self._collector.start()

    # -- placing calls -------------------------------------------------------------

    def submit(self, call: TaskCall[Any]) -> TaskFuture[Any]:
        return self.map([call])[0]

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[TaskFuture[Any]]:
        self.check_open()
        with collector_paused(len(calls)):
            futures: list[TaskFuture[Any]] = [TaskFuture(c.task_run.id, c.task_run.name) for c in calls]
            self._shared.replace(calls)
            entries = [Entry(call, future) for call, future in zip(calls, futures, strict=True)]
            segments = [Segment([e for e in entries if e.call.task is t], self._sizer(t)) for t in _tasks_of(calls)]
        with self._lock:
            closing = self._closing
            if not closing:
                self._outstanding += len(entries)
                self._queue.extend(segments)
                self._dispatch()
        if closing:
            _set_states(entries, Cancelled("the runner was shut down"))
        self._settle()
        return futures

    def map_lane(self, lane: Any) -> None:
        self.check_open()
        segment = LaneSegment(lane, self._sizer(lane.task, lane=True), self._shared.shared_static(lane.static))
        with self._lock:
            closing = self._closing
            if not closing:
                self._outstanding += lane.length
                self._queue.append(segment)
                self._dispatch()
        if closing:
            lane.settle_range(0, lane.length, Cancelled("the runner was shut down"))
        self._settle()

    def _sizer(self, task: Any, lane: bool = False) -> BatchSizer:
        """The sizer of ``task``'s batches: one for its calls in lanes, one for the others (their calls cost unlike)."""
        key = (id(task), lane)
        known = self._sizers.get(key)
        if known is None or known[0] is not task:
            fixed = task.batch_size if task.batch_size is not None else self.batch_size
            known = self._sizers[key] = (task, BatchSizer(fixed, max_size=_MAX_LANE_BATCH if lane else _MAX_BATCH))
        return known[1]

    def _next_batch(self, worker: Worker) -> _Batch | None:
        """Cut the next batch for ``worker`` off the queue and pickle it (lock held); None when the queue is empty."""
        while self._queue:
            segment = self._queue[0]
            if isinstance(segment, LaneSegment):
                sent = segment.cut(segment.sizer.size(len(segment), self.max_workers, _MIN_SECONDS))
                if not segment:
                    self._queue.popleft()
                try:
                    payload = pack_range(sent, with_header=segment.key not in worker.lanes)
                except Exception:  # an argument that will not pickle: found call by call
                    self._queue.appendleft(Segment([Entry(*pair) for pair in as_calls(sent)], None))
                    continue
                worker.lanes.add(segment.key)
                return sent, payload
            queued = segment.entries
            take = len(queued) if segment.sizer is None else segment.sizer.size(len(queued), self.max_workers, _MIN_SECONDS)
            entries = [queued.popleft() for _ in range(take)]
            if not queued:
                self._queue.popleft()
            packed = self._pack(entries, fail=lambda es, state: self._unsent.append((es, state)))
            if packed:
                for extra in reversed(packed[1:]):  # split around a call that will not pickle
                    self._queue.appendleft(Segment(extra[0], None))
                batch, payload = packed[0]
                return Sent(batch, segment.sizer), payload
        return None

    def _settle(self) -> None:
        """Complete the calls that could not be sent while the lock was held."""
        while self._unsent:
            entries, state = self._unsent.pop()
            self._finish(entries, state)

    def _pack(self, entries: list[Entry], fail: Callable[[list[Entry], State[Any]], None]) -> list[_Packed]:
        """Pickle a batch; a call that will not pickle is passed to ``fail``, the others go on."""
        try:
            return [(Sent(entries, None), pack_calls([e.call for e in entries]))]
        except Exception:
            if len(entries) > 1:
                return [b for e in entries for b in self._pack([e], fail)]
        fail(entries, Failed(unpicklable_argument_error(entries[0].call, "a worker process")))
        return []

    def _dispatch(self) -> None:
        """Hand queued batches to workers with room, starting workers as needed (lock held)."""
        while self._queue and not self._cancelling:
            if self._initializer_error is not None:
                self._fail_queue(RunError(f"the worker initializer raised: {self._initializer_error}"))
                return
            worker = min(self._workers.values(), key=lambda w: len(w.batches), default=None)
            if (worker is None or worker.batches) and len(self._workers) < self.max_workers:
                try:
                    worker = start_worker(self)
                except Exception as exc:
                    if self._workers:
                        return  # the running workers take the queue
                    self._fail_queue(exc)
                    return
            if worker is None or len(worker.batches) >= _PREFETCH:
                return
            batch = self._next_batch(worker)
            if batch is None:
                return
            entries, payload = batch
            if not worker.batches:
                entries.started = time.perf_counter()
            worker.batches.append(entries)
            try:
                write_frame(worker.inbox.fileno(), payload)
            except OSError:
                pass  # the worker died; its end-of-file puts this batch back in the queue

    def _fail_queue(self, exc: BaseException) -> None:
        # The lock is held: the states are set from another thread.
        lost = [e for segment in self._queue if isinstance(segment, Segment) for e in segment.entries]
        lanes = [(s, s.next, s.stop) for s in self._queue if isinstance(s, LaneSegment)]
        self._queue.clear()
        state = Crashed(f"no worker process could be started: {exc!r}", exc=exc)

        def finish() -> None:
            self._finish(lost, state)
            self._finish_ranges(lanes, state)

        threading.Thread(target=finish, daemon=True).start()

    # -- completing calls ------------------------------------------------------------

    def _finish(self, entries: list[Entry], state: State[Any] | list[State[Any]]) -> None:
        """Complete ``entries`` with ``state`` (one for all, or one each)."""
        if isinstance(state, list):
            for entry, one in zip(entries, state, strict=False):  # fewer entries: a cancellation took some
                entry.future._set_state(one)
        else:
            _set_states(entries, state)
        self._answered(len(entries))

    def _finish_ranges(self, ranges: Sequence[tuple[LaneSegment | LaneSent, int, int]], state: State[Any]) -> None:
        """Complete the calls ``start`` to ``stop`` of each lane in ``ranges`` with ``state``."""
        for held, start, stop in ranges:
            lane = held.lane if isinstance(held, LaneSegment) else held.segment.lane
            lane.settle_range(start, stop, state)
            self._answered(stop - start)

    def _answered(self, count: int) -> None:
        with self._lock:
            self._outstanding -= count
            wake = self._closing and self._outstanding == 0
        if wake:
            self._wake()

    def _wake(self) -> None:
        assert self._wakeup is not None
        with contextlib.suppress(OSError):
            os.write(self._wakeup[1], b"x")

    # -- shutting down ---------------------------------------------------------------

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        if not self.begin_shutdown():
            return
        if self._collector is None:  # never started
            self._shared.close()
            return
        with self._lock:
            self._closing = True
            if cancel_pending:
                self._cancelling = True
                queued = [e for segment in self._queue if isinstance(segment, Segment) for e in segment.entries]
                lanes_waiting: list[tuple[LaneSegment | LaneSent, int, int]] = [
                    (s, s.next, s.stop) for s in self._queue if isinstance(s, LaneSegment)
                ]
                self._queue.clear()
                running, waiting = [], [e for e in queued if isinstance(e, Entry)]
                lanes_running: list[tuple[LaneSegment | LaneSent, int, int]] = []
                for worker in self._workers.values():
                    started = max(0, worker.pages.started - worker.done) if worker.batches else 0  # ended or running
                    for batch in worker.batches:
                        begun = min(started, len(batch))
                        started -= begun
                        if isinstance(batch, LaneSent):
                            lanes_running.append((batch, batch.next, batch.next + begun))
                            lanes_waiting.append((batch, batch.next + begun, batch.stop))
                        else:
                            running.extend(batch[:begun])
                            waiting.extend(batch[begun:])
                    worker.batches.clear()
                workers = list(self._workers.values())
        if cancel_pending:
            for worker in workers:  # stop the running calls now; the collector reaps them
                with contextlib.suppress(OSError):
                    worker.process.kill()
            now_running = Cancelled("the flow run was cancelled while this run was running")
            not_started = Cancelled("the flow run was cancelled before this run started")
            self._finish(running, now_running)
            self._finish_ranges(lanes_running, now_running)
            self._finish(waiting, not_started)
            self._finish_ranges(lanes_waiting, not_started)
        self._wake()
        if wait:
            self._collector.join()


def _tasks_of(calls: Sequence[TaskCall[Any]]) -> list[Any]:
    """The distinct tasks of ``calls``, in order of first appearance."""
    return list({id(c.task): c.task for c in calls}.values())


def _set_states(entries: list[Entry], state: State[Any]) -> None:
    for entry in entries:
        entry.future._set_state(state)
