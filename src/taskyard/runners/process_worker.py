"""The worker side of the process runner, and the frames both sides exchange.

::

    flow process                          worker process
    ────────────                          ──────────────
    batch frame (cloudpickled calls) ──▶  reader thread ─▶ queue ─▶ main thread:
                                          (end-of-file without a    for each call:
                                           stop frame: the flow       slot = n   (shared memory)
                                           process died — exit)       run it
    state frames, one per call      ◀──────────────────────────────   send its state

A frame is a 4-byte length and a payload. The worker sends each state as
soon as its call ends, so a worker that dies loses no finished run; the
shared ``slot`` counts the calls it has started, so the flow process knows
whether the worker died while running a call (which one: the first without
a state) or between calls (then none is to blame).

States travel as plain tuples (``pickle``, falling back to ``cloudpickle``
for values defined in ``__main__``): a pydantic model pickles five times
slower, and a state is sent per call.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import struct
import threading
from datetime import UTC, datetime
from typing import Any

import cloudpickle

from taskyard.exceptions import RunError, UnpicklableArgumentError
from taskyard.runners.base import Crashed, State, TaskCall, run_call
from taskyard.runners.lifeline import set_parent_death_signal
from taskyard.runners.shared import load_shared
from taskyard.states import Failed, StateType, shared_fields

__all__ = ("worker_main", "write_frame", "FrameBuffer", "UNLOADABLE", "STOP", "INIT_FAILED", "decode_state")

_HEADER = struct.Struct("!I")
UNLOADABLE = b"u"  # worker → flow: the batch did not unpickle here; none of it ran
STOP = b"s"  # flow → worker: no more work; exit when idle
INIT_FAILED = b"i"  # worker → flow: the user's initializer raised (the message follows); exiting
_STATE = b"t"
_ALL_FIELDS = shared_fields(State.model_fields)  # every decoded state shares one set of names


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame to ``fd`` whole (a pipe write may be cut short by a signal)."""
    view = memoryview(_HEADER.pack(len(payload)) + payload)
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


# -- states on the wire -------------------------------------------------------------


def encode_state(state: State[Any]) -> bytes:
    """A state as a frame payload the flow process can load; never raises."""
    fields = _fields_of(state)
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
    return (
        state.type.value, state.name, state.message, state.timestamp.timestamp(), state.data,
        state.run_count, state.traceback, state.result_location, state.log_records,
    )  # fmt: skip


def decode_state(payload: bytes) -> State[Any]:
    """The state a worker sent (the flow process's side of :func:`encode_state`)."""
    type_, name, message, stamp, data, run_count, tb, location, records = pickle.loads(payload[1:])
    return State.model_construct(
        _ALL_FIELDS, type=StateType(type_), name=name, message=message, timestamp=datetime.fromtimestamp(stamp, UTC),
        data=data, run_count=run_count, traceback=tb, result_location=location, log_records=records,
    )  # fmt: skip


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
    inbox: Any, outbox: Any, slot: Any, forked_from_server: bool, inherited: list[int], init: bytes | None = None
) -> None:
    """Entry point of a worker process.

    Args:
        inbox: Connection the flow process sends batch frames on.
        outbox: Connection this worker sends state frames on.
        slot: Shared counter of the calls this worker has started.
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
    # runs (it cancels them and stops this process), so both are ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if forked_from_server:
        set_parent_death_signal(signal.SIGKILL)
    batches: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    threading.Thread(target=_read_batches, args=(inbox.fileno(), batches), name="taskyard-inbox", daemon=True).start()
    out = outbox.fileno()
    if init is not None:
        try:
            initializer, initargs = cloudpickle.loads(init)
            initializer(*initargs)
        except BaseException as exc:
            write_frame(out, INIT_FAILED + f"{type(exc).__name__}: {exc}".encode())
            raise SystemExit(1) from None
    started = 0
    while (payload := batches.get()) is not None:
        try:
            calls: list[TaskCall[Any]] = cloudpickle.loads(payload)
        except Exception:
            write_frame(out, UNLOADABLE)
            continue
        for call in calls:
            started += 1
            slot.value = started
            write_frame(out, encode_state(_run_one(call)))


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
