"""The engine's fast path for a range of a lane's calls, in the process that runs them.

::

    (task, flow run, static arguments, columns, run ids' base) ─▶ run_columns
        for each call: the range's LaneRunInfo moved on to it (its map
        index, id, name and parameters read from the range when asked),
        the function called with its row, its start and end read; a call
        that raised gets its full State (traceback, failure logged), as on
        the fast path
        ─▶ Block: results, starts, ends; full States only where needed

What :func:`taskyard.engine._run_plain` does for one call, done for many:
the flow run's context, the task run's context and the log capture are
entered once per range, and a call that simply returns costs no State and
no object of its own, only its slot in three columns.
"""

from __future__ import annotations

import functools
import math
import time
from array import array
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskyard.context import TaskRunInfo, flow_run_var, task_run_var
from taskyard.engine import _PID, _log_failure, failed_state
from taskyard.lanes import Block
from taskyard.logs import LogCapture
from taskyard.runids import stepped_id
from taskyard.states import Completed, Crashed, State

if TYPE_CHECKING:
    from taskyard.context import FlowRunInfo
    from taskyard.tasks import Task

__all__ = ("LaneRange", "LaneRunInfo", "run_columns", "PLAIN_RESULTS")

#: Result types that travel in the results column: their pickle always loads again.
PLAIN_RESULTS = frozenset({type(None), bool, int, float, complex, str, bytes})


class LaneRange:
    """What a worker needs to run calls ``start`` to ``start + count`` of a lane."""

    __slots__ = ("task", "flow_run", "static", "names", "columns", "start", "id_base", "tags", "count")

    def __init__(
        self,
        task: Task[..., Any],
        flow_run: FlowRunInfo,
        static: dict[str, Any],
        names: Sequence[str],
        columns: Sequence[Sequence[Any]],
        start: int,
        id_base: int,
        tags: frozenset[str],
    ) -> None:
        self.task, self.flow_run, self.static, self.names, self.columns = task, flow_run, static, names, columns
        self.start, self.id_base, self.tags, self.count = start, id_base, tags, len(columns[0])

    def __len__(self) -> int:
        return self.count

    def parameters(self, at: int) -> dict[str, Any]:
        """The bound arguments of the call at offset ``at``: the static ones and its row of the columns."""
        params = dict(self.static)
        for name, column in zip(self.names, self.columns, strict=True):
            params[name] = column[at]
        return params


def run_columns(
    lane: LaneRange,
    first: int,
    started: MutableSequence[int] | None = None,
    flush_seconds: float | None = None,
    on_special: Callable[[State[Any]], State[Any]] | None = None,
) -> Block:
    """Run the calls of ``lane`` from offset ``first`` on; the block of those that ran.

    Args:
        lane: The calls.
        first: The offset of the first call to run.
        started: ``started[0]`` is raised by one as each call starts (a
            process runner's shared counter: which call a dead worker ran).
        flush_seconds: Stop after the call that ends this long after the
            first started: the caller sends the block and goes on.
        on_special: Applied to every full State made (the worker checks it can travel).
    """
    flow_run, origin = lane.flow_run, lane.start + first
    remote = flow_run.pid not in (0, _PID[0])
    count = len(lane) - first
    results: list[Any] = [None] * count
    starts, ends = array("d", bytes(8 * count)), array("d", bytes(8 * count))
    special: dict[int, State[Any]] = {}
    logs: dict[int, tuple[dict[str, Any], ...]] = {}
    capture = LogCapture(flow_run.log_level) if remote else None
    records: list[dict[str, Any]] = capture.records if capture is not None else []
    call, rows = _calls(lane, first)
    current = LaneRunInfo(lane, origin, starts)
    counter = started if started is not None else [0]
    mark = counter[0] + 1  # the count once the call at offset 0 has started
    now = time.time
    offset = -1
    flow_token = flow_run_var.set(flow_run)
    task_token = task_run_var.set(current)
    if capture is not None:
        capture.__enter__()
    try:
        # One clock read per call: a call starts when the one before it ended
        # (the loop goes straight on), or, after one that took the slow way
        # (a full State, log records), when the clock is read again.
        end = now()
        deadline = end + flush_seconds if flush_seconds is not None else math.inf
        for offset, row in enumerate(rows):
            current._at = offset
            counter[0] = mark + offset
            seen = len(records)
            starts[offset] = begin = end
            try:
                try:
                    value, ok = call(*row), True
                except (Exception, SystemExit) as exc:  # the call fails, as on the fast path
                    value, ok = exc, False
                if current.nested is not None:  # runs it submitted (taskyard.nested): waited for before it ends
                    nested, current.nested = current.nested, None
                    nested.close(ok)
            except BaseException as exc:  # never let one call take its worker down with it
                ends[offset] = now()
                interrupted = Crashed(f"{current.name!r} was interrupted in its worker process: {exc!r}", exc=None)
                special[origin + offset] = interrupted if on_special is None else on_special(interrupted)
                end = now()
                continue
            ends[offset] = end = now()
            plain = ok and type(value) in PLAIN_RESULTS
            if plain and len(records) == seen:
                results[offset] = value
            else:  # the slow way: its log records kept, or a full State made
                if plain:
                    results[offset] = value
                    logs[origin + offset] = tuple(records[seen:])
                else:
                    state = _full_state(current.fixed(), value, ok, begin, end, remote, records, seen)
                    special[origin + offset] = state if on_special is None else on_special(state)
                end = now()
            if end >= deadline:
                break
    finally:
        if capture is not None:
            capture.__exit__()
        task_run_var.reset(task_token)
        flow_run_var.reset(flow_token)
    ran = offset + 1
    if ran < count:
        del results[ran:], starts[ran:], ends[ran:]
    return Block(origin, results, starts, ends, special, logs)


def _calls(lane: LaneRange, first: int) -> tuple[Callable[..., Any], Iterable[tuple[Any, ...]]]:
    """The callable and its argument rows for the calls from offset ``first`` on: ``call(*row)`` runs one.

    Positional when the mapped names are the function's first parameters, in
    order (the usual map), the static arguments by keyword; else the
    parameters are bound by name, with any signature.
    """
    task, static, names = lane.task, lane.static, tuple(lane.names)
    binder = task.binder
    if names and binder.simple and binder.names[: len(names)] == names and not static.keys() & names:
        rows = zip(*(column[first:] for column in lane.columns), strict=True)
        return (functools.partial(task.fn, **static) if static else task.fn), rows
    fn, split, parameters = task.fn, task.split_parameters, lane.parameters

    def by_name(at: int) -> Any:
        args, kwargs = split(parameters(at))
        return fn(*args, **kwargs)

    return by_name, zip(range(first, len(lane)), strict=True)


class LaneRunInfo(TaskRunInfo):
    """The run identity of the lane call running now: one object per range of calls, moved on from call to call.

    Setting a fresh :class:`TaskRunInfo` into the context for every call
    cost more than a no-op call itself. This one holds the range, where the
    calls run now began and the offset of the one running; its id, name, map
    index, parameters and start are read from the range when asked. Code that
    keeps the object past its call gets :meth:`fixed` (``get_run_context``
    hands that out), which stays as it is.
    """

    __slots__ = ("_lane", "_origin", "_starts", "_at", "_fixed")

    def __init__(self, lane: LaneRange, origin: int, starts: array[float]) -> None:  # no dataclass __init__: see above
        self._lane, self._origin, self._starts, self._at = lane, origin, starts, 0
        self._fixed: TaskRunInfo | None = None
        self.task_name, self.tags, self.run_count, self.transaction = lane.task.name, lane.tags, 1, None
        self.flow_run_id, self.state_type, self.state_name = lane.flow_run.id, "RUNNING", "Running"
        self.ended = self.nested = self.final = None

    @property
    def id(self) -> str:  # type: ignore[override]
        return stepped_id(self._lane.id_base, self._origin + self._at)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.task_name}-{self.id[:8]}"

    @property
    def map_index(self) -> int:  # type: ignore[override]
        return self._origin + self._at

    @property
    def parameters(self) -> dict[str, Any]:  # type: ignore[override]
        return self.fixed().parameters

    @property
    def started(self) -> float:  # type: ignore[override]
        return self._starts[self._at]

    def fixed(self) -> TaskRunInfo:
        """The identity of the call running now as a :class:`TaskRunInfo` of its own (the same one within a call)."""
        fixed, index = self._fixed, self._origin + self._at
        if fixed is None or fixed.map_index != index:
            lane = self._lane
            run_id = stepped_id(lane.id_base, index)
            fixed = self._fixed = TaskRunInfo(
                run_id, f"{self.task_name}-{run_id[:8]}", self.task_name, self.tags, index, 1, None, self.flow_run_id,
                lane.parameters(index - lane.start), self.state_type, self.state_name, self.started,
            )  # fmt: skip
        return fixed


def _full_state(
    info: TaskRunInfo, value: Any, ok: bool, begin: float, end: float, remote: bool, records: list[Any], seen: int
) -> State[Any]:
    """The State the fast path makes for a call that raised, or whose result travels whole."""
    started, at = datetime.fromtimestamp(begin, UTC), datetime.fromtimestamp(end, UTC)
    if ok:
        state = Completed(value, run_count=1, start_time=started, timestamp=at)
    else:
        state = failed_state(value, 1, remote=remote, start_time=started, timestamp=at)
        info.state_type, info.state_name, info.ended = state.type._value_, state.name, end
        token = task_run_var.set(info)
        try:
            _log_failure(info, state)
        finally:
            task_run_var.reset(token)
    if len(records) != seen:
        state = state.model_copy(update={"log_records": tuple(records[seen:])})
    return state
