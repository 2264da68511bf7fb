"""Columnar lanes: a map whose calls all take the engine's fast path, kept by column in the flow process.

::

    Task.map ─▶ Dispatcher.map ── every call plain? (lane_columns) ──no──▶ one TaskCall per call
                     │ yes
                     ▼
                Lane: static arguments, one column per mapped argument, its run ids' base
                     │ runner.map_lane(lane): ranges of calls shipped as columns
                     ▼
                worker: the calls in a tight loop (lane_engine.run_columns)
                     │ a block per range: results, start and end times; a full
                     ▼ State only for a call that did not simply complete
                Lane.complete(block) ─▶ LaneFuture: its State built on first read

What a map promises per call — a future, a final State, its map index, its
run record — does not need a Python object per call made eagerly: a
:class:`LaneFuture` is two slots (its lane, its index) and reads its run id,
name and State from the lane's columns; a completed call's State is built
the first time it is read (and kept, so it is the same object after), equal
to the one the engine's fast path would have sent. ``FutureList.result()``
over a lane of completed calls is a copy of its results column.

A call that did not simply complete (it raised, was cancelled, its worker
died) has its full State, as on any other path; and a call a runner cannot
keep in the lane (its worker died with it queued) is completed through its
future's ``_set_state``, the way every future is.
"""

from __future__ import annotations

import itertools
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import is_
from typing import TYPE_CHECKING, Any, TypeVar

from taskyard.futures import FutureList, TaskFuture, _call, received_state
from taskyard.gcpause import collector_paused
from taskyard.inputs import ATOMIC, scan
from taskyard.runids import stepped_id
from taskyard.states import Completed, State, StateType

if TYPE_CHECKING:
    from taskyard.context import FlowRunInfo
    from taskyard.tasks import Task

__all__ = ("Lane", "LaneFuture", "LaneFutureList", "Block", "lane_ready")

_BAD = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
_V = TypeVar("_V")
_FUTURES_AT_ONCE = 2048  # futures made between two chances for other threads to run


def lane_ready(
    task: Task[..., Any], flow_run: FlowRunInfo, static: dict[str, Any], mapped: dict[str, Sequence[Any]]
) -> bool | None:
    """Whether every call of this map takes the engine's fast path with no future or State for an argument.

    None if not; else True when every mapped value is of a built-in type
    (the columns pickle with ``pickle``), False when some are not (``cloudpickle``).

    That is: a sync task with no retries, timeout, cache, hooks, persisted
    result, print capture, resource requests, concurrency limit or run name
    of its own; and no future or State among the mapped values (``static``
    holds none: the dispatcher resolved them).
    """
    from taskyard.context import TaskRunInfo
    from taskyard.engine import TaskCall, _is_plain
    from taskyard.persistence import result_plan

    if flow_run.log_prints or task.task_run_name is not None or task.resources or task.max_concurrency is not None:
        return None
    if not _is_plain(task):
        return None
    try:
        if result_plan(TaskCall(task, dict(static), TaskRunInfo("", "", task.name), flow_run), static) is not None:
            return None
    except Exception:  # the engine reports it, run by run
        return None
    plain = True
    for column in mapped.values():
        if type(column) is range:  # ints, and nothing to scan
            continue
        if not ATOMIC.issuperset(map(type, column)):  # a column at a time, in C
            plain = False
            for value in column:
                found: list[Any] = []
                if scan(value, found) or found:
                    return None
    return plain


class Block:
    """The outcome of calls ``start`` to ``start + len(results)`` of a lane, as a worker sends it.

    Attributes:
        start: The map index of the first call.
        results: Each call's return value (None where ``special`` has its State).
        starts: Each call's start, ``time.time()`` (an ``array("d")``).
        ends: Each call's end.
        special: Full States by map index, for the calls that did not complete
            with a plain value (failures, results that travel whole).
        logs: Log records by map index, for completed calls that logged.
    """

    __slots__ = ("start", "results", "starts", "ends", "special", "logs")

    def __init__(
        self,
        start: int,
        results: list[Any],
        starts: array[float],
        ends: array[float],
        special: dict[int, State[Any]] | None = None,
        logs: dict[int, tuple[dict[str, Any], ...]] | None = None,
    ) -> None:
        self.start, self.results, self.starts, self.ends = start, results, starts, ends
        self.special, self.logs = special or {}, logs or {}


class Lane:
    """One map's calls on the fast path: their arguments and outcomes by column (flow process).

    Args:
        task: The task mapped.
        flow_run: The flow run the calls belong to.
        static: The arguments every call gets.
        columns: One sequence per mapped argument, ``length`` long.
        length: The number of calls.
        id_base: Where the calls' run ids start (taskyard.runids).
        tags: The runs' tags.
        plain: Every mapped value is of a built-in type (see :func:`lane_ready`).

    Its futures are made by :meth:`make_futures`, once the runner has the
    lane (its workers start on the first calls meanwhile).
    """

    def __init__(
        self,
        task: Task[..., Any],
        flow_run: FlowRunInfo,
        static: dict[str, Any],
        columns: dict[str, Sequence[Any]],
        length: int,
        id_base: int,
        tags: frozenset[str],
        plain: bool = False,
    ) -> None:
        self.task, self.flow_run, self.static, self.columns = task, flow_run, static, columns
        self.length, self.id_base, self.tags, self.plain = length, id_base, tags, plain
        self.prefix = f"{task.name}-"
        self.results: list[Any] = [None] * length
        self.starts = array("d", bytes(8 * length))
        self.ends = array("d", bytes(8 * length))
        self.done = bytearray(length)  # 1 once the call's outcome is here
        self.special: dict[int, State[Any]] = {}  # full States (anything but a plain completion)
        self.failed = 0  # special States of a failed kind
        self._built: dict[int, State[Any]] = {}  # completions' States, built when first read
        self._lock = threading.Lock()
        self._left = length
        self._all_done = threading.Event()
        self._callbacks: dict[int, list[tuple[Callable[[TaskFuture[Any]], object], TaskFuture[Any]]]] = {}
        self._events: dict[int, threading.Event] = {}
        self._watchers: list[Callable[[int, int], object]] = []

    def make_futures(self) -> LaneFutureList:
        """Make the calls' futures, for the one who mapped (the lane keeps none: they go when the list goes).

        They are made a slice at a time, letting other threads in between:
        the runner's thread that hands the workers their next calls must not
        wait for all of them (a thread holds the interpreter for 5 ms at a time).
        """
        made: list[LaneFuture] = []
        with collector_paused(self.length):
            for start in range(0, self.length, _FUTURES_AT_ONCE):
                stop = min(self.length, start + _FUTURES_AT_ONCE)
                made.extend(map(LaneFuture, itertools.repeat(self, stop - start), range(start, stop)))
                time.sleep(0)
        return LaneFutureList(made)

    # -- identity ------------------------------------------------------------------

    def run_id(self, index: int) -> str:
        return stepped_id(self.id_base, index)

    def run_name(self, index: int) -> str:
        return self.prefix + stepped_id(self.id_base, index)[:8]

    # -- outcomes ----------------------------------------------------------------------

    def state(self, index: int) -> State[Any] | None:
        """The final State of call ``index``, None while it runs (built on first read, then kept)."""
        if not self.done[index]:
            return None
        state = self.special.get(index)
        if state is None:
            state = self._built.get(index)
            if state is None:
                start, end = self.starts[index], self.ends[index]
                built = Completed(
                    self.results[index], start_time=datetime.fromtimestamp(start, UTC), timestamp=datetime.fromtimestamp(end, UTC)
                )
                state = self._built.setdefault(index, built)  # one State per call, whoever reads first
        return state

    def state_names(self) -> list[str]:
        """The names of every call's State ("Pending" for those not done), without building them."""
        names = ["Completed" if done else "Pending" for done in self.done]
        for index, state in list(self.special.items()):
            names[index] = state.name
        return names

    def state_name(self, index: int) -> str:
        """The name of call ``index``'s State, without building it."""
        if not self.done[index]:
            return "Pending"
        special = self.special.get(index)
        return "Completed" if special is None else special.name

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every call is done, or ``timeout`` passed; True if all are done."""
        return self._all_done.wait(timeout)

    def complete(self, block: Block) -> None:
        """Take a block of outcomes from a worker; the calls' futures are done."""
        start, count = block.start, len(block.results)
        stop = start + count
        for index in sorted(block.logs):  # replayed as a State's records are, on arrival
            _replay(block.logs[index])
        special = {index: received_state(state) for index, state in block.special.items()}
        with self._lock:
            if self.done.count(0, start, stop) != count:  # some were completed another way (cancelled)
                fresh = [i for i in range(start, stop) if not self.done[i]]
            else:
                fresh = None
                self.results[start:stop] = block.results
                self.starts[start:stop] = block.starts
                self.ends[start:stop] = block.ends
                self.special.update(special)
                self.done[start:stop] = b"\x01" * count
                self._left -= count
                failed = sum(1 for s in special.values() if s.type in _BAD)
                self.failed += failed
        if fresh is not None:
            for index in fresh:
                offset = index - start
                state = special.get(index)
                self._mark(index, block.results[offset], block.starts[offset], block.ends[offset], state)
            return
        self._finished(start, stop, count, failed)

    def settle(self, index: int, state: State[Any]) -> None:
        """Complete call ``index`` with a full State (a future's ``_set_state``); no effect once done."""
        self._mark(index, None, 0.0, 0.0, received_state(state))

    def settle_range(self, start: int, stop: int, state: State[Any]) -> None:
        """Complete the calls ``start`` to ``stop`` not done yet with one State (a cancellation)."""
        with self._lock:
            fresh = [i for i in range(start, stop) if not self.done[i]]
            for index in fresh:
                self.special[index] = state
                self.done[index] = 1
            self._left -= len(fresh)
            bad = state.type in _BAD
            self.failed += len(fresh) if bad else 0
        for index in fresh:
            self._finished(index, index + 1, 1, int(bad))

    def _mark(self, index: int, result: Any, start: float, end: float, state: State[Any] | None) -> None:
        with self._lock:
            if self.done[index]:
                return
            if state is None:
                self.results[index], self.starts[index], self.ends[index] = result, start, end
            else:
                self.special[index] = state
            self.done[index] = 1
            self._left -= 1
            bad = state is not None and state.type in _BAD
            self.failed += int(bad)
        self._finished(index, index + 1, 1, int(bad))

    def _finished(self, start: int, stop: int, count: int, failed: int) -> None:
        """Wake what waits on calls ``start`` to ``stop``, just completed."""
        if self._left == 0:
            self._all_done.set()
        for watch in self._watchers:
            watch(count, failed)
        if self._events:
            for event in self._take(self._events, start, stop):
                event.set()
        if self._callbacks:
            for callbacks in self._take(self._callbacks, start, stop):
                for fn, future in callbacks:
                    _call(fn, future)

    def _take(self, waiting: dict[int, _V], start: int, stop: int) -> list[_V]:
        """Remove and return what ``waiting`` (events or callbacks) holds for calls ``start`` to ``stop``."""
        with self._lock:
            keys = range(start, stop) if len(waiting) > stop - start else [k for k in waiting if start <= k < stop]
            return [v for v in (waiting.pop(k, None) for k in keys) if v is not None]

    # -- what waits on calls ------------------------------------------------------------

    def watch(self, fn: Callable[[int, int], object]) -> None:
        """Call ``fn(done, failed)`` with the counts of calls each completion brings (progress)."""
        self._watchers.append(fn)

    def add_callback(self, index: int, fn: Callable[[TaskFuture[Any]], object], future: TaskFuture[Any]) -> bool:
        """Keep ``fn`` for call ``index``, to be called with ``future``; False if it is done already (call it yourself)."""
        with self._lock:
            if self.done[index]:
                return False
            self._callbacks.setdefault(index, []).append((fn, future))
            return True

    def event(self, index: int) -> threading.Event | None:
        """An event set when call ``index`` is done; None if it is done already."""
        with self._lock:
            if self.done[index]:
                return None
            event = self._events.get(index)
            if event is None:
                event = self._events[index] = threading.Event()
            return event


class LaneFuture(TaskFuture[Any]):
    """The future of one call of a :class:`Lane`: its identity and State read from the lane's columns."""

    __slots__ = ("_lane", "_index")
    _own_callbacks = True

    def __init__(self, lane: Lane, index: int) -> None:  # no base __init__: the lane holds it all
        self._lane, self._index = lane, index

    @property
    def task_run_id(self) -> str:  # type: ignore[override]
        return self._lane.run_id(self._index)

    @property
    def task_run_name(self) -> str:  # type: ignore[override]
        return self._lane.run_name(self._index)

    @property
    def native(self) -> Any:
        return None

    @property
    def _state(self) -> State[Any] | None:  # type: ignore[override]
        return self._lane.state(self._index)

    def _state_name(self) -> str:
        return self._lane.state_name(self._index)

    def done(self) -> bool:
        return bool(self._lane.done[self._index])

    def wait(self, timeout: float | None = None) -> None:
        event = self._lane.event(self._index)
        if event is not None:
            event.wait(timeout)

    def add_done_callback(self, fn: Callable[[TaskFuture[Any]], object]) -> None:
        if not self._lane.add_callback(self._index, fn, self):
            _call(fn, self)

    def _set_state(self, state: State[Any]) -> None:
        self._lane.settle(self._index, state)


class LaneFutureList(FutureList[Any]):
    """The futures of a lane's map: ``result()`` reads the lane's columns while the list is as it was made."""

    def __init__(self, futures: list[LaneFuture]) -> None:
        super().__init__(futures)
        self._made = tuple(futures)

    def _lane(self) -> Lane | None:
        made = self._made
        lane = made[0]._lane if made else None
        if lane is None or len(self) != len(made) or not all(map(is_, self, made)):
            return None  # changed by its owner: a list of futures like any other
        return lane

    def wait(self, timeout: float | None = None) -> None:
        lane = self._lane()
        if lane is None:
            super().wait(timeout)
        else:
            lane.wait(timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[Any]:
        lane = self._lane()
        if lane is None:
            return super().result(timeout, raise_on_failure)
        if not lane.wait(timeout):
            not_done = lane.done.count(0)
            raise TimeoutError(f"{not_done} of {lane.length} task runs were not done after {timeout} s")
        results = list(lane.results)
        for index in sorted(lane.special):
            results[index] = lane.special[index].result(raise_on_failure=raise_on_failure)
        return results


def _replay(records: tuple[dict[str, Any], ...]) -> None:
    from taskyard.logs import replay_records

    replay_records(records)
