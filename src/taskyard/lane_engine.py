"""The engine's fast path for a range of a lane's calls, in the process that runs them.

::

    (task, flow run, static arguments, columns, run ids) ─▶ run_columns
        for each call: its run identity in the context (map index, id, name),
        the function called, its start and end read; a call that raised
        gets its full State (traceback, failure logged), as on the fast path
        ─▶ Block: results, starts, ends; full States only where needed

What :func:`taskyard.engine._run_plain` does for one call, done for many:
the flow run's context and the log capture are entered once, and a call
that simply returns costs no State, only its slot in three columns.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, MutableSequence, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskyard.context import TaskRunInfo, flow_run_var, task_run_var
from taskyard.engine import _PID, _log_failure, call_once, failed_state
from taskyard.lanes import Block
from taskyard.logs import LogCapture
from taskyard.states import Completed, Crashed, State

if TYPE_CHECKING:
    from taskyard.context import FlowRunInfo
    from taskyard.tasks import Task

__all__ = ("LaneRange", "run_columns", "PLAIN_RESULTS")

#: Result types that travel in the results column: their pickle always loads again.
PLAIN_RESULTS = frozenset({type(None), bool, int, float, complex, str, bytes})


class LaneRange:
    """What a worker needs to run calls ``start`` to ``start + count`` of a lane."""

    __slots__ = ("task", "flow_run", "static", "names", "columns", "start", "ids", "tags", "transaction")

    def __init__(
        self,
        task: Task[..., Any],
        flow_run: FlowRunInfo,
        static: dict[str, Any],
        names: Sequence[str],
        columns: Sequence[Sequence[Any]],
        start: int,
        ids: str,
        tags: frozenset[str],
    ) -> None:
        self.task, self.flow_run, self.static, self.names, self.columns = task, flow_run, static, names, columns
        self.start, self.ids, self.tags = start, ids, tags

    def __len__(self) -> int:
        return len(self.ids) // 32


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
    task, flow_run, static, names, columns = lane.task, lane.flow_run, lane.static, lane.names, lane.columns
    fn, split, task_name, tags = task.fn, task.split_parameters, task.name, lane.tags
    ids, base, prefix, flow_run_id = lane.ids, lane.start, f"{task.name}-", flow_run.id
    remote = flow_run.pid not in (0, _PID[0])
    count = len(lane) - first
    results: list[Any] = [None] * count
    starts, ends = array("d", bytes(8 * count)), array("d", bytes(8 * count))
    special: dict[int, State[Any]] = {}
    logs: dict[int, tuple[dict[str, Any], ...]] = {}
    capture = LogCapture(flow_run.log_level) if remote else None
    records: list[dict[str, Any]] = capture.records if capture is not None else []
    single = names[0] if len(names) == 1 else None
    column = columns[0] if single is not None else ()
    now = time.time
    deadline = None
    flow_token = flow_run_var.set(flow_run)
    if capture is not None:
        capture.__enter__()
    try:
        offset = 0
        for offset in range(count):
            at = first + offset
            if started is not None:
                started[0] += 1
            run_id = ids[32 * at : 32 * at + 32]
            if single is not None and not static:
                params = {single: column[at]}
            else:
                params = dict(static)
                for name, values in zip(names, columns, strict=True):
                    params[name] = values[at]
            begin = now()
            info = TaskRunInfo(
                run_id, prefix + run_id[:8], task_name, tags, base + at, 1, None, flow_run_id, params, "RUNNING", "Running", begin
            )
            token = task_run_var.set(info)
            seen = len(records)
            try:
                args, kwargs = split(params)
                value, ok = call_once(fn, args, kwargs, info)
            except BaseException as exc:  # never let one call take its worker down with it
                end = now()
                interrupted = Crashed(f"{info.name!r} was interrupted in its worker process: {exc!r}", exc=None)
                special[base + at] = interrupted if on_special is None else on_special(interrupted)
                starts[offset], ends[offset] = begin, end
                continue
            finally:
                task_run_var.reset(token)
            end = now()
            starts[offset], ends[offset] = begin, end
            if ok and type(value) in PLAIN_RESULTS:
                results[offset] = value
                if len(records) != seen:
                    logs[base + at] = tuple(records[seen:])
            else:
                state = _full_state(info, value, ok, begin, end, remote, records, seen)
                special[base + at] = state if on_special is None else on_special(state)
            if flush_seconds is not None:
                if deadline is None:
                    deadline = begin + flush_seconds
                if end >= deadline:
                    break
        ran = offset + 1 if count else 0
    finally:
        if capture is not None:
            capture.__exit__()
        flow_run_var.reset(flow_token)
    if ran < count:
        del results[ran:], starts[ran:], ends[ran:]
    return Block(base + first, results, starts, ends, special, logs)


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
