"""The future of a deferred task run: it follows the run through the store, from any process.

::

    DeferredFuture.wait / result / add_done_callback
        └─ watched by this process's watcher thread (one per store):
             every tick, one SELECT for all the watched runs that are final
             → their futures are completed (callbacks run in the watcher);
             about once a second, runs whose worker died are recovered
             (store.taskqueue.recover_lost), so no waiter is left on a run
             that nobody holds any more.

A ``DeferredFuture`` is a :class:`~taskyard.futures.TaskFuture`, so ``wait``,
``as_completed`` and a flow's own waits accept it. It pickles as itself (its
id and store), so a future handed to another process still follows the run;
``DeferredFuture(task_run_id)`` rebuilds one from an id alone.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from taskyard.futures import TaskFuture
from taskyard.runs.stored import StoredResult, decode_record
from taskyard.states import State, StateType
from taskyard.store.db import connect
from taskyard.store.taskqueue import read_rows, recover_lost

__all__ = ("DeferredFuture", "InlineResult", "state_from_row", "deferred_home")

R = TypeVar("R")
logger = logging.getLogger("taskyard.deferred")
_TICK_MIN_S = 0.01
_TICK_MAX_S = 0.25
_RECOVER_EVERY_S = 1.0


def deferred_home() -> Path:
    """The store deferred runs go to: the current flow run's TASKYARD_HOME, else the environment's."""
    from taskyard.context import flow_run_var
    from taskyard.settings import current_settings

    current = flow_run_var.get()
    if current is not None and current.home:
        return Path(current.home)
    return current_settings().home


class DeferredFuture(TaskFuture[R]):
    """The future of a deferred task run (``apply_async``, ``delay``, ``map(deferred=True)``).

    Args:
        task_run_id: The id of the deferred run.
        task_run_name: Its name, if known (shown in messages).
        home: The TASKYARD_HOME whose store holds it (default: the one in effect).
    """

    __slots__ = ("home",)

    def __init__(self, task_run_id: str, task_run_name: str = "", home: Path | str | None = None) -> None:
        super().__init__(task_run_id, task_run_name)
        self.home = Path(home) if home is not None else deferred_home()

    def __repr__(self) -> str:
        return f"<DeferredFuture {self.task_run_name} {self.state.name}>"

    @property
    def state(self) -> State[R]:
        """The run's state as the store has it now (read once more while it is not final)."""
        if self._state is None:
            _watcher(self.home).refresh(self)
            if self._state is None:
                return _watcher(self.home).current(self)
        return super().state

    def done(self) -> bool:
        """True once the run is final in the store."""
        if self._state is None:
            _watcher(self.home).refresh(self)
        return self._state is not None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run is final or ``timeout`` seconds have passed."""
        if self._state is None:
            _watcher(self.home).watch(self)
            super().wait(timeout)

    def add_done_callback(self, fn: Any) -> None:
        """Call ``fn(future)`` once the run is final (at once if it is); from the watcher thread."""
        if self._state is None:
            _watcher(self.home).watch(self)
        super().add_done_callback(fn)

    def __reduce__(self) -> Any:
        return DeferredFuture, (self.task_run_id, self.task_run_name, str(self.home))


class InlineResult:
    """A result kept in the run's row (a signed record): ``State.result()`` decodes it."""

    __slots__ = ("record", "what", "home")

    def __init__(self, record: bytes, what: str, home: Path | None) -> None:
        self.record = record
        self.what = what
        self.home = home

    def __repr__(self) -> str:
        return f"InlineResult({len(self.record)} bytes)"

    def __taskyard_load__(self) -> Any:
        from taskyard.signing import result_key

        return decode_record(self.record, self.what, result_key(self.home) if self.home is not None else None)


def state_from_row(row: tuple[Any, ...], home: Path | None = None) -> State[Any]:
    """A state from ``store.taskqueue.read_rows`` columns; a Completed one loads its result on demand."""
    import cloudpickle

    _, name, _, type_, state_name, message, at, run_count, start, location, error, record = row
    kind = StateType(type_)
    data: Any = None
    if kind is StateType.COMPLETED:
        what = f"deferred task run {name!r}"
        data = InlineResult(record, what, home) if record is not None else StoredResult(location, what)
    elif error is not None:
        try:
            data = cloudpickle.loads(error)
        except Exception as exc:  # a class the reader cannot import: keep the message
            data = RuntimeError(f"{message} (the exception could not be read here: {exc!r})")
    return State(
        type=kind, name=state_name, message=message, timestamp=datetime.fromtimestamp(at, UTC), data=data,
        run_count=run_count, result_location=location,
        start_time=datetime.fromtimestamp(start, UTC) if start is not None else None,
    )  # fmt: skip


class _Watcher:
    """Completes the watched deferred futures of one store as their runs become final."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._watched: dict[str, list[DeferredFuture[Any]]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn_lock = threading.Lock()
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = connect(self.home)
        return self._conn

    def watch(self, future: DeferredFuture[Any]) -> None:
        with self._lock:
            self._watched.setdefault(future.task_run_id, []).append(future)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="taskyard-deferred-watcher", daemon=True)
                self._thread.start()
        self._wake.set()

    def refresh(self, future: DeferredFuture[Any]) -> None:
        """Read one future's run now; complete the future if the run is final."""
        with self._conn_lock:
            rows = read_rows(self._connection(), [future.task_run_id], final_only=True)
        for row in rows:
            future._set_state(state_from_row(row, self.home))

    def current(self, future: DeferredFuture[Any]) -> State[Any]:
        """The run's state as stored (Pending if the store does not have it)."""
        with self._conn_lock:
            rows = read_rows(self._connection(), [future.task_run_id])
        return state_from_row(rows[0], self.home) if rows else State(type=StateType.PENDING)

    def _loop(self) -> None:
        delay = _TICK_MIN_S
        last_recover = 0.0
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            with self._lock:
                ids = list(self._watched)
            if not ids:
                with self._lock:
                    if not self._watched:
                        self._thread = None
                        return
                continue
            try:
                with self._conn_lock:
                    conn = self._connection()
                    if time.monotonic() - last_recover > _RECOVER_EVERY_S:
                        last_recover = time.monotonic()
                        recover_lost(conn)
                    rows = read_rows(conn, ids, final_only=True)
            except Exception:  # the store is busy or gone for a moment: try again
                logger.exception("reading deferred runs from %s failed", self.home)
                rows = []
            for row in rows:
                with self._lock:
                    futures = self._watched.pop(row[0], [])
                state = state_from_row(row, self.home)
                for future in futures:
                    future._set_state(state)
            delay = _TICK_MIN_S if rows else min(delay * 1.5, _TICK_MAX_S)


_watchers: dict[Path, _Watcher] = {}
_watchers_lock = threading.Lock()


def _watcher(home: Path) -> _Watcher:
    with _watchers_lock:
        found = _watchers.get(home)
        if found is None:
            found = _watchers[home] = _Watcher(home)
        return found
