"""The task worker: claims deferred runs of the tasks it serves and runs them on a task runner.

::

    TaskWorker.run()  (one loop, in the thread that calls it)
      ├─ claim: up to `limit` minus what it holds, oldest first, in one
      │         transaction that also writes the results gathered since the
      │         last pass (store.taskqueue.claim)
      ├─ each claimed run → a TaskCall of the *served* task (its retries,
      │         timeout, cache, hooks; results always persisted) → runner.submit
      │         (upstreams read from the store first: NotReady if one failed)
      ├─ runner futures' callbacks → a queue → written at the next pass
      ├─ every LEASE_S/3: renew its leases; every second: recover runs whose
      │         worker died (store.taskqueue.recover_lost)
      └─ stop(): claims nothing more, finishes what it holds; stop(hurry=True)
                hands what is still running back to the queue and returns

Results are always persisted (as in Prefect), by the worker under its own
TASKYARD_HOME (see ``_served``), so the producer, or any process, reads them
from the result storage.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from taskyard.context import TaskRunInfo
from taskyard.deferred.future import deferred_home, state_from_row
from taskyard.engine import TaskCall
from taskyard.futures import TaskFuture
from taskyard.inputs import FutureRef, Upstream, first_blocking_failure, mapping_lookup, resolve
from taskyard.runners.base import TaskRunner, count_lost_attempts
from taskyard.states import Failed, State
from taskyard.store.db import HOST, connect
from taskyard.store.taskqueue import LEASE_S, Claimed, Finished, claim, finish, hand_back, read_rows, recover_lost, renew
from taskyard.tasks import Task

__all__ = ("TaskWorker",)

logger = logging.getLogger("taskyard.worker")
_IDLE_MIN_S = 0.005
_IDLE_MAX_S = 0.2
_RECOVER_EVERY_S = 1.0
_UNLIMITED_BATCH = 100
# A result whose record is at most this large is kept in the run's row.
INLINE_MAX_BYTES = 64 * 1024


class TaskWorker:
    """A worker for deferred runs of ``tasks``; :meth:`run` serves until :meth:`stop`.

    Args:
        tasks: The tasks to serve; runs are matched to them by task name.
        limit: At most this many runs at once (None: no limit).
        task_runner: Where the runs run: a runner instance, class or registered
            name (default: a thread pool of ``limit`` threads).
        home: The TASKYARD_HOME whose store is the queue (default: the environment's).

    Raises:
        TypeError: Something in ``tasks`` is not a task.
        ValueError: No tasks, two tasks with one name, or a bad ``limit``.
    """

    def __init__(self, *tasks: Task[..., Any], limit: int | None = 10, task_runner: Any = None, home: Path | str | None = None) -> None:
        if not tasks:
            raise ValueError("a task worker needs at least one task to serve")
        served: dict[str, Task[..., Any]] = {}
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"a task worker serves @task objects, not {t!r}")
            if t.name in served and served[t.name] is not t:
                raise ValueError(f"two served tasks are named {t.name!r}; runs are matched to tasks by name: rename one")
            served[t.name] = _served(t)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"limit must be a whole number of runs, 1 or more, or None, not {limit!r}")
        self.tasks = served
        self.limit = limit
        self.home = Path(home) if home is not None else deferred_home()
        self._runner_spec = task_runner
        if task_runner is not None:
            from taskyard.flows import _check_runner_spec

            _check_runner_spec(task_runner)  # an unknown name fails here
        self.id = f"{HOST}:{os.getpid()}:{os.urandom(4).hex()}"
        self._done: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._held: dict[str, TaskFuture[Any]] = {}
        self.finished_runs = 0

    def stop(self, *, hurry: bool = False) -> None:
        """Stop claiming; :meth:`run` returns once the runs held are finished (``hurry``: handed back)."""
        self._stopping.set()
        if hurry:
            self._hurry.set()
        self._wake.set()

    def run(self) -> None:
        """Serve until :meth:`stop` is called."""
        from taskyard.console import configure_console
        from taskyard.settings import current_settings

        configure_console(current_settings())
        runner = self._runner()
        conn = connect(self.home)
        names = ", ".join(sorted(self.tasks))
        logger.info("Worker serving %s (limit %s) on %s", names, self.limit or "none", self.home)
        try:
            with runner:
                try:
                    self._loop(conn, runner)
                finally:
                    self._leave(conn, runner)
        finally:
            conn.close()
        logger.info("Worker stopped after %d runs", self.finished_runs)

    def _runner(self) -> TaskRunner[Any]:
        if self._runner_spec is None:
            from taskyard.runners.threads import ThreadPoolTaskRunner

            return ThreadPoolTaskRunner(max_workers=self.limit or None)
        from taskyard.runners.registry import resolve_runner

        return resolve_runner(self._runner_spec)

    def _loop(self, conn: Any, runner: TaskRunner[Any]) -> None:
        retries = {name: t.retries for name, t in self.tasks.items()}
        delay = _IDLE_MIN_S
        last_renew = last_recover = time.monotonic()
        while True:
            results = self._gather()
            if self._stopping.is_set():
                finish(conn, results, self.id)
                if not self._held or self._hurry.is_set():
                    return
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            free = self.limit - len(self._held) if self.limit else _UNLIMITED_BATCH
            claimed = claim(conn, retries, free, self.id, os.getpid(), also=results)
            for run in claimed:
                self._start(conn, runner, run)
            now = time.monotonic()
            if self._held and now - last_renew > LEASE_S / 3:
                last_renew = now
                renew(conn, self.id)
            if now - last_recover > _RECOVER_EVERY_S:
                last_recover = now
                recover_lost(conn)
            if claimed and len(claimed) == free:
                delay = _IDLE_MIN_S
                continue  # full: wait for a run to finish (it wakes us)
            if claimed:
                delay = _IDLE_MIN_S
                continue  # there may be more ready runs
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, _IDLE_MAX_S)

    def _gather(self) -> list[Finished]:
        out: list[Finished] = []
        while True:
            try:
                finished = self._done.get_nowait()
            except queue.Empty:
                return out
            self._held.pop(finished.id, None)
            out.append(finished)
            self.finished_runs += 1

    def _start(self, conn: Any, runner: TaskRunner[Any], run: Claimed) -> None:
        task = self.tasks[run.task_name]
        try:
            call = self._call(conn, task, run)
        except Exception as exc:
            self._held[run.id] = TaskFuture(run.id, run.name)
            message = f"deferred task run {run.name!r} could not be prepared: {type(exc).__name__}: {exc}"
            self._done.put(_finished(run.id, Failed(exc, message=message, run_count=0), task, self.home))
            return
        if isinstance(call, State):  # NotReady: an upstream failed
            self._held[run.id] = TaskFuture(run.id, run.name)
            self._done.put(_finished(run.id, call, task, self.home))
            return
        future = runner.submit(call)
        self._held[run.id] = future

        def done(f: TaskFuture[Any], run_id: str = run.id) -> None:
            # In the thread that completes the future: results are written in parallel.
            self._done.put(_finished(run_id, f.state, task, self.home))
            self._wake.set()

        future.add_done_callback(done)

    def _call(self, conn: Any, task: Task[..., Any], run: Claimed) -> TaskCall[Any] | State[Any]:
        import cloudpickle

        data = cloudpickle.loads(run.call)
        params = data["parameters"]
        ups = [(i, n, m) for i, n, m in data["upstreams"] if i is not None]
        if ups:
            states: dict[str, State[Any]] = dict(data["states"])
            missing = [i for i, _, _ in ups if i not in states]
            for row in read_rows(conn, missing):
                states[row[0]] = state_from_row(row, self.home)
            lookup = mapping_lookup(states)
            upstreams = [Upstream(FutureRef(i, n), m) for i, n, m in ups]
            blocked = first_blocking_failure(upstreams, lookup)
            if blocked is not None:
                return blocked
            params = resolve(params, lookup)
        info = TaskRunInfo(run.id, run.name, task.name, frozenset(json.loads(run.tags)), run.map_index)
        call: TaskCall[Any] = TaskCall(task, params, info, None, ())
        if run.claims > 1:
            count_lost_attempts(call, run.claims - 1)
        return call

    def _leave(self, conn: Any, runner: TaskRunner[Any]) -> None:
        """On the way out: write what finished, hand back what did not."""
        finish(conn, self._gather(), self.id)
        if self._held:
            # Handed back first: what the runner then cancels is not written.
            handed = hand_back(conn, list(self._held), self.id)
            if handed:
                logger.info("Worker handed %d unfinished runs back to the queue", handed)
            self._held.clear()
            runner.shutdown(wait=False, cancel_pending=True)


def _served(t: Task[..., Any]) -> Task[..., Any]:
    """The copy of ``t`` a worker runs: its result always persisted, where the producer can read it.

    A task with a cache persists through the engine (its cache records are
    its results). Otherwise the worker persists the value itself, under its
    own TASKYARD_HOME: the process that runs the call (a pool process, a
    cluster worker) may see another environment.
    """
    from taskyard.caching import NONE

    if t.cache_key_fn is not None or (t.cache_policy is not None and t.cache_policy is not NONE):
        return t if t.persist_result else t.with_options(persist_result=True)
    return t if t.persist_result is False else t.with_options(persist_result=False)


def _finished(run_id: str, state: State[Any], task: Task[..., Any], home: Path) -> Finished:
    import cloudpickle

    location = state.result_location
    error = record = None
    if state.is_completed() and location is None:
        location, record, state = _persist(run_id, state, task, home)
    if state.is_bad():
        exc = state.exception()
        try:
            error = cloudpickle.dumps(exc)
        except Exception:
            error = cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    start = state.start_time.timestamp() if state.start_time is not None else None
    return Finished(
        run_id, state.type.value, state.name, state.message, state.timestamp.timestamp(), state.run_count, start, location, error,
        record,
    )  # fmt: skip


def _persist(run_id: str, state: State[Any], task: Task[..., Any], home: Path) -> tuple[str | None, bytes | None, State[Any]]:
    """Keep the value of a Completed state: ``(location, record, state)``.

    A record of at most ``INLINE_MAX_BYTES`` goes into the run's row (written
    with the batch, no file and no fsync of its own) unless the task names a
    ``result_storage``; a larger one goes to the result storage under ``home``.
    """
    from taskyard.results import encode, get_serializer, get_storage
    from taskyard.signing import result_key

    try:
        value = state.result()
        record = encode(value, get_serializer(task.result_serializer), None, None, result_key(home))
        if task.result_storage is None and len(record) <= INLINE_MAX_BYTES:
            return None, record, state
        storage = get_storage(task.result_storage, home)
        return str(storage.write(run_id, record)), None, state
    except Exception as exc:
        message = f"the result of deferred task run {run_id} could not be persisted: {type(exc).__name__}: {exc}"
        return None, None, Failed(exc, message=message, run_count=state.run_count)

