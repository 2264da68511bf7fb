"""The runner toolkit: what every runner on a cluster backend needs, written once.

The Dask and Ray runners are built from these parts; a third cluster plugin
should need little more than its backend's submit, wait and cancel calls.
Everything here is backend-neutral: a part takes the backend's own objects
(native futures, sizes) through small callables.

::

    flow process                                        worker
    ────────────                                        ──────
    split_upstreams(call, native_of)
      upstream TaskFutures → ids + native futures ───▶  run_on_worker(call, ids, *states)
      (not yet placed → Outstanding.defer)              (the backend resolved the native
    find_shared / with_placeholders                      futures into their States)
      a large value every call shares → SharedArg ───▶  shared values put back in place
      (the runner ships the value once: scatter/put)    call.run(states): the engine runs here
    Outstanding: the runs in flight, for
      shutdown(wait) / shutdown(cancel_pending)
    lose_attempt / lost_state
      a worker died → place again while retries allow, else Crashed
    LogRelay ◀── record_payload(record) ◀────────────── a record logged during a run

The parts:

* **Upstreams passed natively**: :func:`split_upstreams` turns a call's
  upstream futures into the backend's futures (the runner hands them to the
  backend as top-level arguments, which every backend resolves before the
  function runs), and :func:`run_on_worker` gives their states to the engine.
  An upstream that has no native future yet (a run held back by a
  concurrency limit, or a future of another runner) is waited for with
  :meth:`Outstanding.defer` and then passed as its final State.
* **Shared values shipped once**: :func:`find_shared` names the parameters
  every call of a map shares and that are large; the runner ships each once
  (``client.scatter``, ``ray.put``), :func:`with_placeholders` swaps them for
  :class:`SharedArg` placeholders, and :func:`run_on_worker` puts the
  values back (the runner passes the shipped values as trailing arguments).
* **Lost workers**: :func:`lose_attempt` decides whether a run whose worker
  died runs again (its ``retries`` allow it; the engine then counts on from
  the lost attempts) and :func:`lost_state` is the Crashed state otherwise.
* **Cancel on exit**: :class:`Outstanding` tracks the runs in flight; at
  shutdown the runner either waits for them or takes them all, completes
  their futures Cancelled, and cancels the native futures.
* **Results left on the cluster**: a :class:`RemoteTaskFuture` is marked
  done when its run finishes there (:meth:`RemoteTaskFuture.mark_finished`)
  and fetches its State only when someone reads it, so a chain A→B→C never
  moves data through the flow process.
* **Batches**: :class:`BatchFeeder` queues the calls of a map and hands
  them to the runner in batches as the backend takes them (a few batches in
  flight per worker), each cut to the size the task's
  :class:`~taskyard.runners.base.BatchSizer` gives (:class:`TaskSizers`
  keeps one per task); :func:`batch_upstreams` sorts the batch's calls into
  those that go now and those that wait for an upstream; the runner runs a batch
  as one backend task with :func:`run_batch_on_worker` and reports its end
  with :meth:`BatchFeeder.finished`. The batch's native future stands for
  every call in it: a call downstream gets it as its upstream and
  :func:`run_on_worker` picks the upstream's State out of the
  :class:`~taskyard.runners.base.BatchResult`.
* **Worker logs**: :func:`record_payload` turns a record logged on a worker
  into a plain dict a backend can carry (an event, a message), and
  :class:`LogRelay` hands the payloads of this flow process's runs to its
  loggers. A runner that streams records this way marks each one
  ``record.taskyard_streamed = True`` so the engine does not ship it a
  second time with the state. Without streaming, the engine ships the
  records of a run with its final state and they are replayed when the
  future is completed — every runner gets that for free.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from taskyard.runners.base import (
    BatchResult,
    BatchSizer,
    Cancelled,
    Pending,
    Crashed,
    CrashedRunError,
    Failed,
    State,
    TaskCall,
    TaskFuture,
    count_lost_attempts,
    received_state,
    run_batch,
    set_state,
    unpicklable_argument_error,
)
from taskyard.runners.placeholders import SharedArg, estimate_size, find_shared, with_placeholders
from taskyard.runners.worker_logs import LogRelay, record_payload

__all__ = (
    "SharedArg",
    "find_shared",
    "estimate_size",
    "with_placeholders",
    "split_upstreams",
    "Upstreams",
    "run_on_worker",
    "run_batch_on_worker",
    "BatchFeeder",
    "TaskSizers",
    "batch_upstreams",
    "BatchUpstreams",
    "Outstanding",
    "lose_attempt",
    "lost_state",
    "submit_failure_state",
    "record_payload",
    "LogRelay",
    "RemoteTaskFuture",
    "ReleasedResult",
)

E = TypeVar("E")

# -- upstreams ----------------------------------------------------------------------------


class Upstreams(NamedTuple):
    """A call's upstreams, sorted for placement (see :func:`split_upstreams`)."""

    ids: list[str]
    """Task run ids, in the order of ``values``."""
    values: list[Any]
    """For each id: the backend's native future, or the final State when the upstream has none."""
    waiting: list[TaskFuture[Any]]
    """Upstreams with no native future that are not done yet: wait for them, then split again."""


def split_upstreams(call: TaskCall[Any], native_of: Callable[[TaskFuture[Any]], Any]) -> Upstreams:
    """Sort the upstream futures of ``call`` into native futures, final states, and runs to wait for.

    Args:
        call: A call the dispatcher handed over with ``upstreams`` (a runner
            with ``resolves_dependencies`` gets them before they are done).
        native_of: The runner's usable native future for an upstream, or
            None (no native future yet, one of another runner or backend,
            or one the backend has lost).
    """
    ids: list[str] = []
    values: list[Any] = []
    waiting: list[TaskFuture[Any]] = []
    seen: set[str] = set()
    for upstream, _ in call.upstreams:
        if not isinstance(upstream, TaskFuture) or upstream.task_run_id in seen:
            continue
        seen.add(upstream.task_run_id)
        native = native_of(upstream)
        if native is not None:
            ids.append(upstream.task_run_id)
            values.append(native)
        elif upstream.done():
            ids.append(upstream.task_run_id)
            values.append(upstream.state)
        else:
            waiting.append(upstream)
    return Upstreams(ids, values, waiting)


class BatchUpstreams(NamedTuple):
    """The upstreams of a batch's calls together (see :func:`batch_upstreams`)."""

    ready: list[int]
    """Indices of the calls whose upstreams can all be passed now: they go in the batch."""
    waiting: list[int]
    """Indices of the calls with an upstream to wait for: the runner places each alone (it defers itself)."""
    ids: list[str]
    """Upstream task run ids of the ready calls, each once, in the order of ``values``."""
    values: list[Any]
    """For each id: the backend's native future (one batch's future may stand for several ids) or a final State."""


def batch_upstreams(calls: Sequence[TaskCall[Any]], native_of: Callable[[TaskFuture[Any]], Any]) -> BatchUpstreams:
    """:func:`split_upstreams` over the calls of one batch: what goes in the batch, and its upstreams once each."""
    found = BatchUpstreams([], [], [], [])
    seen: set[str] = set()
    for i, call in enumerate(calls):
        if not call.upstreams:
            found.ready.append(i)
            continue
        ids, values, waiting = split_upstreams(call, native_of)
        if waiting:
            found.waiting.append(i)
            continue
        found.ready.append(i)
        for run_id, value in zip(ids, values, strict=True):
            if run_id not in seen:
                seen.add(run_id)
                found.ids.append(run_id)
                found.values.append(value)
    return found


def run_on_worker(call: TaskCall[Any], ids: Sequence[str], values: Sequence[Any], where: str = "a worker") -> State[Any]:
    """Run ``call`` where it landed (worker side) and return its final State.

    Args:
        call: The call, with :class:`SharedArg` placeholders if it has shared values.
        ids: The upstream task run ids from :func:`split_upstreams`.
        values: The upstreams' States (resolved by the backend), one per id,
            then the shared values in placeholder order.
        where: Names the place in the message of a Crashed state.

    A failure of the engine itself (not of user code, which ends Failed)
    becomes Crashed.
    """
    n = len(ids)
    shared = values[n:]
    if shared:
        # A new call, not an edit: a worker in the flow's own process shares the object.
        params = {k: shared[v.index] if type(v) is SharedArg else v for k, v in call.parameters.items()}
        call = TaskCall(call.task, params, call.task_run, call.flow_run, call.upstreams)
    states = {}
    for run_id, value in zip(ids, values[:n], strict=True):
        # An upstream that ran in a batch: the backend resolved the whole batch's result.
        states[run_id] = value.states[run_id] if type(value) is BatchResult else value
    try:
        return call.run(states or None)
    except Exception as exc:
        return Crashed(f"the engine failed running {call.task_run.name!r} on {where}: {exc!r}", exc=exc)


def run_batch_on_worker(
    calls: Sequence[TaskCall[Any]], ids: Sequence[str], values: Sequence[Any], where: str = "a worker"
) -> BatchResult:
    """Run a batch of calls where it landed (worker side), each on its own; one State per call.

    ``ids`` and ``values`` are those of :func:`run_on_worker`, for the
    upstreams of all the calls together.
    """
    return run_batch(calls, lambda call: run_on_worker(call, ids, values, where))


class TaskSizers:
    """One :class:`~taskyard.runners.base.BatchSizer` per task, for a runner that batches.

    A task's own ``batch_size`` wins over ``default`` (the runner's); None
    on both adapts the size to how long the task's calls take.
    """

    def __init__(self, default: int | None) -> None:
        self.default = default
        self._sizers: dict[int, tuple[Any, BatchSizer]] = {}

    def __call__(self, task: Any) -> BatchSizer:
        """The sizer of ``task`` (made at its first map, kept while the runner lives)."""
        known = self._sizers.get(id(task))
        if known is None or known[0] is not task:  # the task object kept with it: its id names it
            fixed = task.batch_size if task.batch_size is not None else self.default
            known = self._sizers[id(task)] = (task, BatchSizer(fixed))
        return known[1]


class BatchFeeder(Generic[E]):
    """Flow side of batching: a map's calls wait here and go to the backend in batches.

    Args:
        send: ``send(entries, sizer)`` places one batch on the backend (called
            without the feeder's lock held); the runner calls :meth:`finished`
            when it ends, however it ends.
        workers: The number of calls the backend runs at once (its threads).
        per_worker: Batches in flight per worker: one running, one ready.

    A batch is cut when it can be sent, so its size follows what the last
    batches of that task measured; nothing is cut while ``per_worker``
    batches per worker are in flight, which is also what lets a cancelled
    flow run drop the calls still here (:meth:`cancel`).
    """

    def __init__(self, send: Callable[[list[E], BatchSizer], None], workers: Callable[[], int], per_worker: int = 2) -> None:
        self._send = send
        self._workers = workers
        self._per_worker = per_worker
        self._lock = threading.Lock()
        self._queue: deque[tuple[deque[E], BatchSizer]] = deque()
        self._in_flight = 0
        self.closing = False

    def add(self, entries: Sequence[E], sizer: BatchSizer) -> None:
        """Queue the calls of one map (of one task) and send what fits now (a deque given is taken over, not copied)."""
        if entries:
            queued = entries if type(entries) is deque else deque(entries)
            with self._lock:
                self._queue.append((queued, sizer))
            self.pump()

    def pump(self) -> None:
        """Send batches while fewer than ``per_worker`` per worker are in flight."""
        while True:
            workers = max(1, self._workers())  # outside the lock: asking the backend may block (a lost Ray head)
            with self._lock:
                if self.closing or not self._queue or self._in_flight >= workers * self._per_worker:
                    return
                queued, sizer = self._queue[0]
                batch = [queued.popleft() for _ in range(sizer.size(len(queued), workers))]
                if not queued:
                    self._queue.popleft()
                self._in_flight += 1
            self._send(batch, sizer)

    def finished(self, sizer: BatchSizer, calls: int, seconds: float | None) -> None:
        """A batch of ``calls`` ended after ``seconds`` (None: do not learn from it); send more."""
        if seconds is not None:
            sizer.record(calls, seconds)
        with self._lock:
            self._in_flight -= 1
        self.pump()

    def queued(self) -> list[E]:
        """A snapshot of the calls not yet sent."""
        with self._lock:
            return [e for queued, _ in self._queue for e in queued]

    def cancel(self) -> list[E]:
        """Stop sending; return (and forget) the calls not yet sent."""
        with self._lock:
            self.closing = True
            entries = [e for queued, _ in self._queue for e in queued]
            self._queue.clear()
        return entries


# -- runs in flight -----------------------------------------------------------------------


class Outstanding(Generic[E]):
    """The runs a runner has placed and not yet completed, for shutdown and cancel-on-exit.

    Entries are the runner's own objects (holding the call, its future and
    its native future), keyed by anything hashable (the native key).
    ``future_of`` reads an entry's TaskFuture.
    """

    def __init__(self, future_of: Callable[[E], TaskFuture[Any]]) -> None:
        self._future_of = future_of
        self._lock = threading.Lock()
        self._placed: dict[Any, E] = {}
        self._deferred: dict[int, E] = {}
        self.closing = False
        """True once the runner is cancelling: deferred runs end Cancelled instead of being placed."""

    def add(self, key: Any, entry: E) -> None:
        """Track ``entry``, placed on the backend under ``key``."""
        with self._lock:
            self._placed[key] = entry

    def pop(self, key: Any) -> E | None:
        """Stop tracking the entry under ``key`` (it finished); None if unknown or taken."""
        with self._lock:
            return self._placed.pop(key, None)

    def entries(self) -> list[E]:
        """A snapshot of the placed entries."""
        with self._lock:
            return list(self._placed.values())

    def defer(self, entry: E, waiting: Iterable[TaskFuture[Any]], place: Callable[[E], None]) -> None:
        """Call ``place(entry)`` once every future in ``waiting`` is done (at once if they are).

        If the runner starts cancelling meanwhile, the entry's future ends
        Cancelled instead.
        """
        waiting = list(waiting)
        with self._lock:
            self._deferred[id(entry)] = entry
        remaining = [len(waiting)]

        def upstream_done(_: TaskFuture[Any]) -> None:
            with self._lock:
                remaining[0] -= 1
                if remaining[0] or self._deferred.pop(id(entry), None) is None:
                    return
            if self.closing:
                set_state(self._future_of(entry), Cancelled("the flow run was cancelled before this run started"))
            else:
                place(entry)

        for upstream in waiting:
            upstream.add_done_callback(upstream_done)

    def wait_all(self) -> None:
        """Block until every tracked run (placed or deferred, including ones added meanwhile) is done."""
        while True:
            with self._lock:
                futures = [self._future_of(e) for e in (*self._placed.values(), *self._deferred.values())]
            pending = [f for f in futures if not f.done()]
            if not pending:
                return
            for future in pending:
                future.wait()

    def cancel_all(self, message: str = "the flow run was cancelled before this run finished") -> list[E]:
        """Stop every tracked run: complete their futures Cancelled and return the entries.

        The runner then cancels the native futures of the returned entries
        on its backend. Runs finishing meanwhile are ignored (their futures
        are complete already).
        """
        self.closing = True
        with self._lock:
            entries = [*self._placed.values(), *self._deferred.values()]
            self._placed.clear()
            self._deferred.clear()
        for entry in entries:
            set_state(self._future_of(entry), Cancelled(message))
        return entries


# -- lost runs ------------------------------------------------------------------------------


def lose_attempt(call: TaskCall[Any], lost: int, closing: bool = False) -> bool:
    """True if ``call``, whose worker died ``lost`` times, should be placed again.

    It should while its ``retries`` allow (and the runner is not
    cancelling); the run count is then set so the engine counts on from the
    lost attempts — a task with ``retries=N`` runs at most ``1 + N`` times.
    Otherwise complete the future with :func:`lost_state`.
    """
    if closing or lost > call.task.retries:
        return False
    count_lost_attempts(call, lost)
    return True


def lost_state(call: TaskCall[Any], lost: int, what: str, cause: BaseException | None = None) -> State[Any]:
    """The Crashed state of a run the backend lost ``lost`` times; ``what`` says what happened."""
    message = f"{what} while running task run {call.task_run.name!r} (lost {lost}x)"
    error = CrashedRunError(message)
    error.__cause__ = cause
    return Crashed(message, exc=error, run_count=lost)


def submit_failure_state(call: TaskCall[Any], exc: BaseException, destination: str) -> State[Any]:
    """The state of a call the backend refused: Failed if the call cannot be pickled, else Crashed."""
    import cloudpickle

    try:
        cloudpickle.dumps(call)
    except Exception:
        return Failed(unpicklable_argument_error(call, destination))
    message = f"{destination} refused task run {call.task_run.name!r}: {exc!r}"
    error = CrashedRunError(message)
    error.__cause__ = exc
    return Crashed(message, exc=error)


# -- states left on the cluster ---------------------------------------------------------------

_FINISHED_REMOTELY: State[Any] = State.model_construct(  # a marker, never shown as a final state
    type=Pending().type, name="FinishedRemotely", message="finished on the cluster; fetched when read"
)


class RemoteTaskFuture(TaskFuture[Any]):
    """A future whose final State stays on the cluster until someone reads it.

    The runner calls :meth:`mark_finished` when the backend says the run
    finished: ``done()`` turns True, waiters wake and done-callbacks run,
    but nothing is transferred. Reading ``state`` (or ``result()``) calls
    ``fetch(future)`` once, which returns the State (the runner may fetch
    and :meth:`install` finished siblings in the same round trip).
    """

    __slots__ = ("_fetch", "_fetch_lock")

    def __init__(
        self, task_run_id: str, task_run_name: str, fetch: Callable[[RemoteTaskFuture], State[Any]], native: Any = None
    ) -> None:
        super().__init__(task_run_id, task_run_name, native)
        self._fetch = fetch
        self._fetch_lock = threading.Lock()

    @property
    def state(self) -> State[Any]:
        state = self._state
        if state is _FINISHED_REMOTELY:
            with self._fetch_lock:
                if self._state is _FINISHED_REMOTELY:
                    self.install(self._fetch(self))
            state = self._state
        return state if state is not None else Pending()

    @property
    def remote(self) -> bool:
        """True while the run has finished but its State has not been fetched."""
        return self._state is _FINISHED_REMOTELY

    def mark_finished(self) -> None:
        """The run finished on the cluster: complete the future, leaving its State there."""
        self._set_state(_FINISHED_REMOTELY)

    def install(self, state: State[Any]) -> None:
        """Give a finished future its fetched State (log records it carries are replayed once)."""
        if self._state is _FINISHED_REMOTELY:
            self._state = received_state(state)


class ReleasedResult:
    """Stands for the result of a run that stayed on the cluster after its flow run ended.

    Put it as the ``data`` of a Completed state whose result is too large to
    bring back unasked; ``state.result()`` then raises MissingResultError
    with ``message``.
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __taskyard_load__(self) -> Any:
        from taskyard.exceptions import MissingResultError

        raise MissingResultError(self.message)

    def __reduce__(self) -> tuple[type[ReleasedResult], tuple[str]]:
        return ReleasedResult, (self.message,)

    def __repr__(self) -> str:
        return f"ReleasedResult({self.message!r})"
