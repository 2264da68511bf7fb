"""The worker side of the process runner, and the frames both sides exchange.

::

    flow process                          worker process
    ────────────                          ──────────────
    batch frame (the calls, packed) ──▶   reader thread ─▶ queue ─▶ main thread:
                                          (end-of-file without a    for each call:
                                           stop frame: the flow       started += 1 (shared memory)
                                           process died — exit)       run it
    page frames ("page k is ready")  ◀──  its state into a shared page (state_pages.py)

A frame is a 4-byte length and a payload. The state of each call that ends
goes at once into shared memory, which outlives the worker, and the pages
are handed over every few milliseconds: a worker that dies loses no
finished run. The shared ``started`` counter says how many calls the worker
has started, so the flow process knows whether the worker died while
running a call (which one: the first without a state) or between calls
(then none is to blame).

A batch of a map's calls travels as their shared task and flow run plus
one row per call (:func:`pack_calls`). States travel as plain tuples
(``pickle``, falling back to ``cloudpickle`` for values defined in
``__main__``): a pydantic model pickles five times slower.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import pickle
import queue
import signal
import struct
import threading
import time
from datetime import UTC, datetime
from typing import Any

import cloudpickle

from taskyard.exceptions import RunError, UnpicklableArgumentError
from taskyard.batching import batch_levels
from taskyard.runners.base import Crashed, State, TaskCall, run_call
from taskyard.runners.group_signals import ignore_group_signals
from taskyard.runners.lifeline import set_parent_death_signal
from taskyard.lane_engine import PLAIN_RESULTS
from taskyard.runners.process_lanes import LANE, LaneReader
from taskyard.logs import levels_held
from taskyard.runners.shared import load_shared
from taskyard.runners.state_pages import FLUSH_SECONDS, STARTED, PageWriter, StatePages
from taskyard.context import TaskRunInfo
from taskyard.states import Failed, StateType, shared_fields

__all__ = ("worker_main", "write_frame", "FrameBuffer", "UNLOADABLE", "STOP", "INIT_FAILED", "decode_state", "pack_calls")

_HEADER = struct.Struct("!I")
UNLOADABLE = b"u"  # worker → flow: the batch did not unpickle here; none of it ran
STOP = b"s"  # flow → worker: no more work; exit when idle
INIT_FAILED = b"i"  # worker → flow: the user's initializer raised (the message follows); exiting
_STATE = b"t"
_ALL_FIELDS = shared_fields(State.model_fields)  # every decoded state shares one set of names


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame to ``fd`` whole (a pipe write may be cut short by a signal)."""
    _write(fd, _frame(payload))


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FrameBuffer:
    """Collects bytes read from a pipe and hands out the complete frames."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._data += data
        frames = []
        start, size = 0, len(self._data)
        while size - start >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._data, start)
            end = start + _HEADER.size + length
            if end > size:
                break
            frames.append(bytes(self._data[start + _HEADER.size : end]))
            start = end
        if start:
            del self._data[:start]
        return frames


# -- calls on the wire ----------------------------------------------------------------

# What a run the dispatcher just made holds besides its identity (read in one C call).
_UNIFORM = operator.attrgetter("parameters", "state_type", "state_name", "started", "ended", "nested", "final")
_FRESH = _UNIFORM(TaskRunInfo("", "", ""))


def pack_calls(calls: list[TaskCall[Any]]) -> bytes:
    """A batch of calls as one payload for a worker (cloudpickle; the calls' task and flow run once).

    The calls of a map share their task and flow run and differ only in
    their identity and arguments, so they travel as one row each, rebuilt
    into calls on the worker: pickling each call's objects costs ten times
    more than that. Calls that do not fit that shape travel as they are.
    """
    rows = _rows(calls)
    if rows is None:
        return bytes(cloudpickle.dumps(calls))
    first = calls[0]
    return bytes(cloudpickle.dumps((first.task, first.flow_run, first.task_run.task_name, first.task_run.flow_run_id, rows)))


def _rows(calls: list[TaskCall[Any]]) -> list[tuple[Any, ...]] | None:
    first = calls[0]
    task, flow_run, task_name, flow_run_id = first.task, first.flow_run, first.task_run.task_name, first.task_run.flow_run_id
    rows = []
    for call in calls:
        run = call.task_run
        if (
            call.task is not task or call.flow_run is not flow_run or call.upstreams
            or run.task_name != task_name or run.flow_run_id != flow_run_id or _UNIFORM(run) != _FRESH
        ):  # fmt: skip
            return None
        rows.append((run.id, run.name, run.map_index, run.run_count, run.tags, run.transaction, call.parameters))
    return rows


def unpack_calls(payload: bytes) -> list[TaskCall[Any]]:
    """The calls :func:`pack_calls` packed (in the worker)."""
    loaded = cloudpickle.loads(payload)
    if isinstance(loaded, list):
        return loaded
    task, flow_run, task_name, flow_run_id, rows = loaded
    return [
        TaskCall(task, parameters, TaskRunInfo(id_, name, task_name, tags, index, count, txn, flow_run_id), flow_run)
        for id_, name, index, count, tags, txn, parameters in rows
    ]


# -- states on the wire -------------------------------------------------------------


def encode_state(state: State[Any]) -> bytes:
    """A state as a frame payload the flow process can load; never raises."""
    fields = _fields_of(state)
    if type(state.data) in PLAIN_RESULTS and type(state.message) in PLAIN_RESULTS and not state.log_records and not state.history:
        # Built-in values only (the other fields are strings, numbers or None):
        # they pickle and load again, so the check below is spared (most runs).
        return _STATE + pickle.dumps(fields, pickle.HIGHEST_PROTOCOL)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        try:
            data: bytes = dumps(fields, pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)  # it must load again (an exception's __init__ may not take its args)
            return _STATE + data
        except Exception as exc:
            problem = exc
    fallback: bytes = cloudpickle.dumps(_fields_of(_unsendable(state, problem)))
    return _STATE + fallback




def _fields_of(state: State[Any]) -> tuple[Any, ...]:
    start = state.start_time
    return (
        state.type._value_, state.name, state.message, state.timestamp.timestamp(), state.data,
        state.run_count, state.traceback, state.result_location, state.log_records,
        None if start is None else start.timestamp(), state.history,
    )  # fmt: skip


def decode_state(payload: bytes) -> State[Any]:
    """The state a worker sent (the flow process's side of :func:`encode_state`)."""
    return _state_of(*pickle.loads(payload[1:]))


_TYPES = {t.value: t for t in StateType}
_new_state = State.__new__
_set = object.__setattr__


def _state_of(
    type_: str, name: str, message: Any, stamp: float, data: Any, run_count: int, tb: Any, location: Any,
    records: Any, start: float | None, history: Any,
) -> State[Any]:
    # Built as State.model_construct would, without its per-field work: the
    # values were a State's a moment ago (one per call of a map comes here).
    state = _new_state(State)
    _set(state, "__dict__", {
        "type": _TYPES[type_], "name": name, "message": message, "timestamp": datetime.fromtimestamp(stamp, UTC),
        "data": data, "run_count": run_count, "traceback": tb, "result_location": location,
        "start_time": None if start is None else datetime.fromtimestamp(start, UTC), "history": history,
        "log_records": records,
    })  # fmt: skip
    _set(state, "__pydantic_fields_set__", _ALL_FIELDS)
    _set(state, "__pydantic_extra__", None)
    _set(state, "__pydantic_private__", None)
    return state


def _unsendable(state: State[Any], exc: BaseException) -> State[Any]:
    what = "result" if state.is_completed() else "exception"
    error = RunError(
        f"the {what} of this run cannot be sent back from the worker process ({type(exc).__name__}: {exc}); "
        "return values and exceptions must be rebuildable from their pickle (e.g. an exception's "
        "__init__ must accept its args)"
    )
    return Failed(error, message=str(error), run_count=state.run_count)


# -- the worker process ---------------------------------------------------------------


def worker_main(
    inbox: Any, outbox: Any, pages: StatePages, forked_from_server: bool, inherited: list[int], init: bytes | None = None
) -> None:
    """Entry point of a worker process.

    Args:
        inbox: Connection the flow process sends batch frames on.
        outbox: Connection this worker sends state frames on.
        pages: Shared memory: the count of calls started, and the pages states go through.
        forked_from_server: The parent is the fork server, a process that
            lives exactly as long as the flow process: its death may kill us.
        inherited: Descriptors a forked worker holds by accident (the flow
            process's ends of the pipes): closed, so that end-of-file comes.
        init: The user's ``(initializer, initargs)``, cloudpickled, or None.
    """
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Ctrl-C in a terminal reaches the whole process group; SIGTERM from a
    # service manager may too. The flow process decides what happens to the
    # runs (it cancels them and stops this process), so both are ignored here
    # (they have been blocked since the start: group_signals).
    ignore_group_signals()
    if forked_from_server:
        set_parent_death_signal(signal.SIGKILL)
    batches: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    threading.Thread(target=_read_batches, args=(inbox.fileno(), batches), name="taskyard-inbox", daemon=True).start()
    out = outbox.fileno()
    writer = PageWriter(pages, lambda frame: _write(out, frame))
    if init is not None:
        try:
            initializer, initargs = cloudpickle.loads(init)
            initializer(*initargs)
        except BaseException as exc:
            write_frame(out, INIT_FAILED + f"{type(exc).__name__}: {exc}".encode())
            raise SystemExit(1) from None
    # What the worker holds by now (its modules, the initializer's state) lives as
    # long as it does: kept out of the collector's passes, which a batch's calls
    # (all alive until it ends) would otherwise make pass over all of it again and again.
    gc.collect()
    gc.freeze()
    lanes = LaneReader()
    started = memoryview(pages.counts).cast("B").cast("q")  # the shared counters, cheaper to raise than through ctypes
    while (payload := batches.get()) is not None:
        if payload[:1] == LANE:
            _run_lane(lanes, payload, started, writer, out)
            # The next batch is here already (the flow process keeps two with each worker):
            # the page goes over once the flow process has taken the other one, without waiting.
            writer.hand_over(wait=batches.empty())
            continue
        try:
            calls = unpack_calls(payload)
        except Exception:
            write_frame(out, UNLOADABLE)
            continue
        with batch_levels(calls):
            _run_batch(calls, pages.counts, writer)


def _run_lane(lanes: LaneReader, payload: bytes, counts: Any, writer: PageWriter, out: int) -> None:
    """Run a range of a lane's calls; each block of outcomes goes to a page as it is made."""
    try:
        lane = lanes.read(payload)
    except Exception:
        write_frame(out, UNLOADABLE)
        return

    def send(block: bytes) -> None:
        writer.put(_frame(block))
        writer.hand_over()

    with levels_held(lane.flow_run.log_level):
        lanes.run(lane, counts, FLUSH_SECONDS, send)


def _run_batch(calls: list[TaskCall[Any]], counts: Any, writer: PageWriter) -> None:
    """Run the calls of one batch in order; each state goes to a page as its call ends."""
    for call in calls:
        counts[STARTED] += 1
        writer.put(_frame(encode_state(_run_one(call))))
        if time.perf_counter() - writer.handed_at >= FLUSH_SECONDS:
            writer.hand_over()
    writer.hand_over(wait=True)  # the flow process needs them to send more


def _read_batches(fd: int, batches: queue.SimpleQueue[bytes | None]) -> None:
    # Also the worker's lifeline: end-of-file without a stop frame means the
    # flow process is gone, and nothing this worker does matters any more.
    buffer = FrameBuffer()
    while True:
        try:
            data = os.read(fd, 1 << 20)
        except OSError:
            data = b""
        if not data:
            os._exit(1)
        for frame in buffer.feed(data):
            if frame == STOP:
                batches.put(None)
                return
            batches.put(frame)


def _run_one(call: TaskCall[Any]) -> State[Any]:
    try:
        load_shared(call)
    except Exception as exc:
        error = UnpicklableArgumentError(f"a shared argument could not be loaded in the worker process: {exc!r}")
        return Failed(error, message=str(error), run_count=0)
    try:
        return run_call(call)
    except BaseException as exc:  # never let one call take its worker down with it
        return Crashed(f"{call.task_run.name!r} was interrupted in its worker process: {exc!r}", exc=None)
