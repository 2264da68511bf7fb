"""ProcessPoolTaskRunner: calls run in worker processes, shipped with cloudpickle.

::

    submit/map ─▶ cloudpickle.dumps(batch of calls) ─▶ ProcessPoolExecutor
                   │ (fails: Failed state naming        │ worker: loads, run each
                   │  the argument that won't pickle)   │ call (engine here:
                   ▼                                    │ retries, timeouts via
    futures ◀── states ◀── cloudpickle.loads ◀──────────┘ SIGALRM), dumps states
       ▲
       └── pool broke (a worker died): the pool is replaced and the lost calls
           go to a quarantine queue that runs them again one at a time. A
           call that breaks a pool while running alone is the culprit: it is
           retried while its retries allow, then ends Crashed; the others
           complete.

cloudpickle (not pickle) ships the calls, so tasks defined in ``__main__``,
in a notebook or as closures work. For the same reason the workers never
import the parent's ``__main__``: multiprocessing would otherwise re-run a
script without an ``if __name__ == "__main__"`` guard in every worker (and
fail outright for code read from stdin). ``map`` sends calls in batches to
cut the per-call cost of the pool; a batch is small enough that every worker
gets several.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.spawn
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cloudpickle

from taskyard.exceptions import RunError, UnpicklableArgumentError
from taskyard.runners.base import (
    Cancelled,
    Crashed,
    State,
    TaskCall,
    TaskFuture,
    TaskRunner,
    local_capacity,
    run_call,
    unpicklable_argument_error,
)
from taskyard.runners.shared import SharedArguments, load_shared
from taskyard.states import Failed

__all__ = ("ProcessPoolTaskRunner",)

_MAX_BATCH = 64
_Item = tuple[TaskCall[Any], TaskFuture[Any]]

# -- workers start without the parent's __main__ -------------------------------------
#
# multiprocessing puts the parent's main module into the data every new worker
# is prepared with, and the worker imports it. Workers of this runner never
# need it (cloudpickle ships __main__'s functions by value), so while this
# runner submits — which is when the pool starts workers — that entry is left
# out. Other users of multiprocessing are not affected.
_launching = threading.local()
_original_preparation = multiprocessing.spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = _original_preparation(name)
    if getattr(_launching, "active", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _install_preparation_hook() -> None:
    if multiprocessing.spawn.get_preparation_data is not _preparation_data:
        multiprocessing.spawn.get_preparation_data = _preparation_data


def _submit_without_main(pool: ProcessPoolExecutor, payload: bytes) -> Future[bytes]:
    _launching.active = True
    try:
        return pool.submit(_run_batch, payload)
    finally:
        _launching.active = False


def _initialize(shipped: bytes) -> None:
    """Run the user's initializer in a new worker process."""
    initializer, initargs = cloudpickle.loads(shipped)
    initializer(*initargs)


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
        initargs: The arguments for ``initializer``.
    """

    name = "processes"
    requires_pickling = True
    supports_cancel_running = True

    def __init__(
        self,
        max_workers: int | None = None,
        start_method: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {initializer!r}")
        self.initializer, self.initargs = initializer, tuple(initargs)
        self.max_workers = max_workers or os.cpu_count() or 1
        self.resources = local_capacity(resources, self.max_workers)
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, not {self.start_method!r}")
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending: dict[Future[bytes], tuple[ProcessPoolExecutor, list[_Item], bool]] = {}
        self._losses: dict[str, int] = {}
        self._quarantine: deque[_Item] = deque()
        self._quarantine_busy = False
        self._shared = SharedArguments()

    def resource_capacity(self) -> Mapping[str, float]:
        return self.resources

    def setup(self) -> None:
        _install_preparation_hook()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(["taskyard.engine", "cloudpickle"])
        if self.initializer is None:
            return ProcessPoolExecutor(self.max_workers, mp_context=ctx)
        shipped = cloudpickle.dumps((self.initializer, self.initargs))
        return ProcessPoolExecutor(self.max_workers, mp_context=ctx, initializer=_initialize, initargs=(shipped,))

    def submit(self, call: TaskCall[Any]) -> TaskFuture[Any]:
        return self.map([call])[0]

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[TaskFuture[Any]]:
        self.check_open()
        futures: list[TaskFuture[Any]] = [TaskFuture(c.task_run.id, c.task_run.name) for c in calls]
        self._shared.replace(calls)
        items = list(zip(calls, futures, strict=True))
        size = max(1, min(_MAX_BATCH, len(items) // (self.max_workers * 4)))
        for start in range(0, len(items), size):
            self._send(items[start : start + size])
        return futures

    def _send(self, batch: list[_Item], quarantined: bool = False) -> None:
        try:
            payload = cloudpickle.dumps([call for call, _ in batch])
        except Exception:
            if len(batch) > 1:  # find the call that will not pickle; send the rest
                for item in batch:
                    self._send([item], quarantined)
                return
            call, future = batch[0]
            future._set_state(Failed(unpicklable_argument_error(call, "a worker process")))
            if quarantined:
                self._quarantine_done()
            return
        with self._lock:
            pool = self._pool
            if pool is None:
                for _, future in batch:
                    future._set_state(Cancelled("the runner was shut down"))
                return
            try:
                done = _submit_without_main(pool, payload)
            except (BrokenProcessPool, RuntimeError):
                self._replace_pool(pool)
                assert self._pool is not None
                pool = self._pool
                done = _submit_without_main(pool, payload)
            self._pending[done] = (pool, batch, quarantined)
        done.add_done_callback(self._collect)

    def _collect(self, done: Future[bytes]) -> None:
        # A done-callback: whatever happens, every future of the batch is completed.
        with self._lock:
            pool, batch, quarantined = self._pending.pop(done, (None, [], False))
        try:
            if done.cancelled():
                for _, future in batch:
                    future._set_state(Cancelled("the flow run was cancelled before this run started"))
                return
            exc = done.exception()
            if exc is None:
                self._deliver(batch, done.result(), quarantined)
                return
            elif isinstance(exc, BrokenProcessPool):
                self._recover(pool, batch, quarantined)
                return
            else:
                for call, future in batch:
                    future._set_state(Crashed(f"the process pool failed running {call.task_run.name!r}: {exc!r}", exc=exc))
        except BaseException as exc:
            for call, future in batch:
                future._set_state(Crashed(f"the result of {call.task_run.name!r} could not be collected: {exc!r}", exc=exc))
            if not isinstance(exc, Exception):
                raise
        if quarantined:
            self._quarantine_done()

    def _deliver(self, batch: list[_Item], payload: bytes, quarantined: bool) -> None:
        if payload == _UNLOADABLE:
            if len(batch) > 1:  # nothing ran: send each call alone to find the one at fault
                for item in batch:
                    self._send([item], quarantined)
                return
            call, future = batch[0]
            error = UnpicklableArgumentError(
                f"the call {call.task_run.name!r} could not be unpickled in the worker process; "
                "its arguments must be rebuildable from their pickle there"
            )
            future._set_state(Failed(error, message=str(error), run_count=0))
        else:
            try:
                states: list[State[Any]] = cloudpickle.loads(payload)
            except Exception as exc:  # the worker checked this loads; a second line of defence
                states = [Failed(RunError(f"the outcome of this run could not be unpickled here: {exc!r}"))] * len(batch)
            for (_, future), state in zip(batch, states, strict=True):
                future._set_state(state)
        if quarantined:
            self._quarantine_done()

    def _recover(self, pool: ProcessPoolExecutor | None, batch: list[_Item], quarantined: bool) -> None:
        with self._lock:
            if pool is not None and self._pool is pool and self.started:
                self._replace_pool(pool)
        suspects = []
        for call, future in batch:
            if not self.started:
                future._set_state(Cancelled("the runner shut down while this run's worker process was lost"))
                continue
            if not quarantined:  # lost beside others: not to blame (yet)
                suspects.append((call, future))
                continue
            key = call.task_run.id
            losses = self._losses.get(key, 0) + 1
            self._losses[key] = losses
            if losses > call.task.retries:
                message = f"a worker process died while running {call.task_run.name!r} (attempt {losses})"
                future._set_state(Crashed(message, run_count=losses))
            else:
                call.task_run.run_count = losses  # the lost attempts count against its retries
                suspects.append((call, future))
        with self._lock:
            self._quarantine.extend(suspects)
            if quarantined:
                self._quarantine_busy = False
        self._pump_quarantine()

    def _quarantine_done(self) -> None:
        with self._lock:
            self._quarantine_busy = False
        self._pump_quarantine()

    def _pump_quarantine(self) -> None:
        with self._lock:
            if self._quarantine_busy or not self._quarantine:
                return
            self._quarantine_busy = True
            item = self._quarantine.popleft()
        self._send([item], quarantined=True)

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        if not self.begin_shutdown():
            return
        with self._lock:
            pool, self._pool = self._pool, None
            running = [item for _, batch, _ in self._pending.values() for item in batch] if cancel_pending else []
            leftover = list(self._quarantine)
            self._quarantine.clear()
        for _, future in leftover:
            future._set_state(Cancelled("the runner shut down before this lost run could run again"))
        if pool is None:
            self._shared.close()
            return
        if cancel_pending:
            # Queued work is dropped; running work is stopped by ending the
            # worker processes (the pool offers no other way to interrupt).
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                proc.terminate()
            for _, future in running:
                future._set_state(Cancelled("the flow run was cancelled before this run finished"))
            if wait:
                for proc in processes:
                    proc.join()
            self._shared.close()
        elif wait:
            pool.shutdown(wait=True)
            self._shared.close()
        else:  # the shared files must outlive the calls still running
            pool.shutdown(wait=False)
            threading.Thread(target=self._close_after, args=(pool,), daemon=True).start()

    def _close_after(self, pool: ProcessPoolExecutor) -> None:
        pool.shutdown(wait=True)
        self._shared.close()


_UNLOADABLE = b""  # the worker's answer to a batch it could not unpickle


def _run_batch(payload: bytes) -> bytes:
    """Worker side: run a batch of calls and send their states back.

    A batch that does not unpickle here is answered with ``_UNLOADABLE`` (none
    of it ran; the flow process sends its calls again one by one). The states
    go back as one pickle that this process has checked it can load again;
    a state that cannot make the trip is replaced by a Failed one saying why.
    """
    try:
        calls: list[TaskCall[Any]] = cloudpickle.loads(payload)
    except Exception:
        return _UNLOADABLE
    states = [_run_one(call) for call in calls]
    try:
        data: bytes = cloudpickle.dumps(states)
        pickle.loads(data)
        return data
    except Exception:
        portable: bytes = cloudpickle.dumps([_portable(state) for state in states])
        return portable


def _run_one(call: TaskCall[Any]) -> State[Any]:
    try:
        load_shared(call)
    except Exception as exc:
        error = UnpicklableArgumentError(f"a shared argument could not be loaded in the worker process: {exc!r}")
        return Failed(error, message=str(error), run_count=0)
    try:
        return run_call(call)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # never let one call take its batch down with it
        return Crashed(f"{call.task_run.name!r} was interrupted in its worker process: {exc!r}", exc=None)


def _portable(state: State[Any]) -> State[Any]:
    """The state if it survives a pickle round trip, else a Failed state saying why."""
    try:
        pickle.loads(cloudpickle.dumps(state))
        return state
    except Exception as exc:
        what = "result" if state.is_completed() else "exception"
        error = RunError(
            f"the {what} of this run cannot be sent back from the worker process ({type(exc).__name__}: {exc}); "
            "return values and exceptions must be rebuildable from their pickle (e.g. an exception's "
            "__init__ must accept its args)"
        )
        return Failed(error, message=str(error), run_count=state.run_count)
