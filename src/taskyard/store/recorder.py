"""The recorder: what a flow process does, queued in memory and written in batches.

One :class:`Recorder` per process and database. The flow engine calls it;
nothing it does waits on SQLite except :meth:`Recorder.finish` (a flow run
that returns has every task run in the store) and the flush at interpreter
exit. A background thread writes every ``TICK_S`` seconds — one transaction
for everything found since the last pass — keeps the heartbeat of the
process's running flow runs, and polls their cancellation requests.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import attrgetter, is_
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from taskyard.states import State, StateType
from taskyard.store.codec import CHUNK_FORMAT, SEP, TYPE_OF_NAME, dumps_json, encode_chunk, squeeze
from taskyard.store.db import HOST, connect, write
from taskyard.store.lanechunks import encode_lane, finished_upto, history_of

from taskyard.futures import TaskFuture

if TYPE_CHECKING:
    from taskyard.context import FlowRunInfo, TaskRunInfo
    from taskyard.lanes import Lane

__all__ = ("Recorder", "recorder_for", "TICK_S", "HEARTBEAT_S", "CANCEL_POLL_S")

TICK_S = 0.5
HEARTBEAT_S = 5.0
CANCEL_POLL_S = 1.0
logger = logging.getLogger("taskyard.store")

# Plain strings: an enum member costs more to pickle than a shared str.
_TYPE = {t: t.value for t in StateType}
# The state names whose type a chunk need not store (codec.TYPE_OF_NAME).
_KNOWN_NAMES = frozenset(TYPE_OF_NAME)

_START_SQL = """
INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, state_time, parameters, tags, task_runner,
                       parent_task_run_id, parent_flow_run_id, created, start_time, pid, host, heartbeat)
VALUES (?, ?, ?, 'RUNNING', 'Running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    state_type = 'RUNNING', state_name = 'Running', state_message = NULL, state_time = excluded.state_time,
    parameters = excluded.parameters, task_runner = excluded.task_runner, start_time = excluded.start_time,
    pid = excluded.pid, host = excluded.host, heartbeat = excluded.heartbeat
"""
_STATE_ROW_SQL = "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, ?, ?, ?, ?)"
_FINAL_SQL = """
UPDATE flow_runs SET state_type = ?, state_name = ?, state_message = ?, state_time = ?, end_time = ?,
                     run_count = ?, result_location = ?, heartbeat = ?
WHERE id = ?
"""


class _Run:
    """A flow run of this process that is still being recorded."""

    __slots__ = ("id", "pending", "lanes", "counts", "on_cancel", "beat", "cancelled")

    def __init__(self, run_id: str, on_cancel: Callable[[str], object] | None) -> None:
        self.id = run_id
        # Batches as submitted: (task runs, their futures or final states, submission time,
        # how many of them from the start are written already)
        self.pending: list[_Held] = []
        # Lanes as submitted: [lane, submission time, how many of its runs are written]
        self.lanes: list[list[Any]] = []
        self.counts: dict[str, int] = {}
        self.on_cancel = on_cancel
        self.beat = time.time()
        self.cancelled = False


class Recorder:
    """Records the flow runs of this process into the store under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()  # guards the queues below
        self._write_lock = threading.Lock()  # one write pass at a time
        self._statements: list[tuple[str, tuple[Any, ...]]] = []
        self._logs: list[tuple[Any, ...]] = []
        self._runs: dict[str, _Run] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._last_poll = 0.0
        self._tags: dict[frozenset[str], tuple[str, ...]] = {}

    # -- what the flow engine calls ---------------------------------------------------

    def start_run(
        self,
        info: FlowRunInfo,
        *,
        task_runner: str,
        parent_task_run_id: str | None,
        parent_flow_run_id: str | None,
        source: str | None,
        on_cancel: Callable[[str], object] | None = None,
    ) -> None:
        """A flow run started in this process: written at once by the writer thread."""
        now = time.time()
        row = (
            info.id, info.name, info.flow_name, now, dumps_json(info.parameters), dumps_json(sorted(info.tags)),
            task_runner, parent_task_run_id, parent_flow_run_id, now, now, os.getpid(), HOST, now,
        )  # fmt: skip
        with self._lock:
            self._statements.append((_START_SQL, row))
            self._statements.append((_STATE_ROW_SQL, (info.id, "RUNNING", "Running", None, now)))
            if source is not None:
                self._statements.append(
                    ("INSERT OR REPLACE INTO flows (name, source, updated) VALUES (?, ?, ?)", (info.flow_name, source, now))
                )
            self._runs[info.id] = _Run(info.id, on_cancel)
            self._ensure_thread()
        self._wake.set()

    def track(
        self,
        run_id: str,
        infos: Sequence[TaskRunInfo],
        futures: Sequence[TaskFuture[Any]],
        submitted: float,
        *,
        mapped: bool = False,
        name_prefix: str | None = None,
        ids: str | None = None,
    ) -> None:
        """Task runs handed to the runner; each is written once its future is done.

        ``mapped``: the runs are a map's, ``infos[i]`` has map index ``i``.
        ``name_prefix``: every run is named ``name_prefix + its id[:8]`` (the
        default names). ``ids``: the ids of a map's runs concatenated, 32 hex
        digits each. None of them is then stored run by run (see codec).
        """
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                shape = _Map(name_prefix, ids if ids is not None and len(ids) == 32 * len(infos) else None)
                run.pending.append((infos, futures, submitted, 0, shape if mapped else None))

    def track_lane(self, run_id: str, lane: Lane, submitted: float) -> None:
        """A map's runs kept by column (taskyard.lanes); written from its columns as they finish."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                run.lanes.append([lane, submitted, 0])

    def track_done(self, run_id: str, info: TaskRunInfo, state: State[Any], submitted: float) -> None:
        """A task run that already has its final state (run inline in the flow body)."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None:
                run.pending.append(((info,), (state,), submitted, 0, None))

    def log(self, flow_run_id: str, task_run_id: str | None, created: float, level: int, name: str, message: str) -> None:
        """A log record of a run this process records."""
        with self._lock:
            if flow_run_id in self._runs:
                self._logs.append((flow_run_id, task_run_id, created, level, name, message))

    def finish(self, run_id: str, state: State[Any]) -> None:
        """The flow run ended: write its final state and every task run, then return."""
        now = time.time()
        end = state.timestamp.timestamp()
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (_STATE_ROW_SQL, (run_id, "RUNNING", s.name, s.message, s.timestamp.timestamp())) for s in state.history
        ]
        statements.append((_STATE_ROW_SQL, (run_id, _TYPE[state.type], state.name, state.message, end)))
        final = (_TYPE[state.type], state.name, state.message, end, end, state.run_count, state.result_location, now, run_id)
        statements.append((_FINAL_SQL, final))
        with self._lock:
            self._statements.extend(statements)
        try:
            self._write_pass(finishing=run_id)
        finally:
            with self._lock:
                self._runs.pop(run_id, None)

    def flush(self) -> None:
        """Write everything queued so far."""
        self._write_pass()

    # -- the writer ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:  # with self._lock held
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="taskyard-recorder", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self._write_pass()
                self._poll_cancellations()
            except Exception:  # a store that cannot be written must not stop the flow
                logger.exception("recording runs in %s failed", self.home)
            with self._lock:
                idle = not self._runs and not self._statements and not self._logs
                if idle:
                    self._thread = None
            if idle:  # nothing to record: release the database until the next run
                with self._write_lock:
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
                return

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.home)
        return self._conn

    def _write_pass(self, finishing: str | None = None) -> None:
        with self._write_lock:
            with self._lock:
                statements, self._statements = self._statements, []
                logs, self._logs = self._logs, []
                taken = []
                for run in self._runs.values():
                    if run.pending or run.lanes:
                        taken.append((run, run.pending))
                        run.pending = []
            now = time.time()
            chunks: list[tuple[str, int, int, bytes]] = []
            for run, batches in taken:
                ready, rest = _split(batches, finishing=run.id == finishing)
                if rest:
                    with self._lock:
                        run.pending.extend(rest)
                lane_chunks = self._encode_lanes(run, finishing=run.id == finishing)
                if ready or lane_chunks:
                    encoded = self._encode_all(ready, run.counts) if ready else []
                    chunks.extend((run.id, count, CHUNK_FORMAT, blob) for count, blob in encoded + lane_chunks)
                    statements.append(("UPDATE flow_runs SET task_counts = ? WHERE id = ?", (dumps_json(run.counts), run.id)))
            with self._lock:
                for run in self._runs.values():
                    if now - run.beat >= HEARTBEAT_S:
                        run.beat = now
                        statements.append(("UPDATE flow_runs SET heartbeat = ? WHERE id = ?", (now, run.id)))
            if not (statements or chunks or logs):
                return

            def body(conn: sqlite3.Connection) -> None:
                for sql, params in statements:
                    conn.execute(sql, params)
                if chunks:
                    conn.executemany("INSERT INTO task_run_chunks (flow_run_id, count, format, data) VALUES (?, ?, ?, ?)", chunks)
                if logs:
                    conn.executemany("INSERT INTO logs (flow_run_id, task_run_id, timestamp, level, logger, message) VALUES (?, ?, ?, ?, ?, ?)", logs)

            write(self._connection(), body)

    def _encode_lanes(self, run: _Run, finishing: bool) -> list[tuple[int, bytes]]:
        """Chunks for the runs of ``run``'s lanes finished since the last pass, from the front of each lane."""
        chunks = []
        with self._lock:
            lanes = list(run.lanes)
        for held in lanes:
            lane, at, start = held
            stop = finished_upto(lane, start, finishing)
            if stop > start:
                chunks.append((stop - start, encode_lane(lane, at, start, stop, self._tag_tuple(lane.tags), run.counts)))
                held[2] = stop
        with self._lock:
            run.lanes = [held for held in run.lanes if held[2] < held[0].length]
        return chunks

    def _encode_all(self, batches: list[_Batch], counts: dict[str, int]) -> list[tuple[int, bytes]]:
        """The chunks for the task runs of ``batches``.

        A map's runs that the engine's fast path made here get a chunk of
        their own (see :meth:`_encode_plain`); all others share one.
        """
        chunks: list[tuple[int, bytes]] = []
        others: list[_Read] = []
        for infos, held, at, start, shape in batches:
            plain = self._encode_plain(infos, held, at, start, shape, counts) if len(infos) >= _PLAIN_FROM else None
            if plain is not None:
                chunks.append(plain)
            else:
                states = _states_now(held.futures) if isinstance(held, _Unread) else held
                others.append((infos, states, at, start, shape))
        if others:
            chunks.append(self._encode(others, counts))
        return chunks

    def _encode_plain(
        self,
        infos: Sequence[TaskRunInfo],
        held: Sequence[State[Any]] | _Unread,
        at: float,
        start: int,
        shape: _Map | None,
        counts: dict[str, int],
    ) -> tuple[int, bytes] | None:
        """One chunk for runs that all completed on the engine's fast path in this process; else None.

        The common case of a large map, and the cost of recording it: a
        no-op run costs the runner a few microseconds, so this reads seven
        attributes per run, each column in one C-level pass, and stores one
        column of ids and two of times. What the runs share — the task, tags,
        submission time, ``Completed`` with no message or result location,
        one attempt, names made from ids, map indices counting up — is stored
        once. ``held`` are the runs' final states, or (when the flow run is
        finishing) their futures, read here.
        """
        count = len(infos)
        finals = list(map(_FINAL, infos))
        if not all(finals):  # runs that never ended (a State is always true; None is not)
            return None
        try:
            states = list(map(_FUTURE_STATE, held.futures)) if type(held) is _Unread else held
            # Each future holds the very state the fast path kept on its run (compared by
            # identity first: a State's own == runs only for a pair that is not the same object).
            if finals != states:
                return None
        except Exception:  # a future of another kind, or states that cannot be compared
            return None
        ends = list(map(_ENDED, infos))  # set with `final`
        if list(map(_STATE_NAME, infos)).count("Completed") != count:
            return None  # failures have messages: the general encoding
        if list(map(_INFO_RUN_COUNT, infos)).count(1) != count:
            return None  # attempts before this one: histories
        if shape is not None and shape.ids is not None:  # the map's own string of ids: no run read
            ids: tuple[str, Any] = ("w", shape.ids[32 * start : 32 * (start + count)])
        else:
            joined = SEP.join(map(_ID, infos))
            if joined.count(SEP) != count - 1:
                return None
            ids = (SEP, joined)
        prefix = shape.name_prefix if shape is not None else None
        first = infos[0]
        counts["Completed"] = counts.get("Completed", 0) + count
        columns: list[Any] = [
            ids,
            ("n", prefix) if prefix is not None else squeeze(list(map(_RUN_NAME, infos))),
            ("=", first.task_name),
            ("r", start) if shape is not None else squeeze(list(map(_MAP_INDEX, infos))),
            ("=", self._tag_tuple(first.tags)), ("=", at), None, ("=", "Completed"), ("=", None), ("=", 1),
            list(map(_STARTED, infos)), ends, ("=", None), ("=", None),
        ]  # fmt: skip
        return count, encode_chunk(count, columns, squeezed=True)  # the times are never all equal

    def _encode(self, batches: list[_Read], counts: dict[str, int]) -> tuple[int, bytes]:
        """One chunk for the task runs of ``batches``, column by column (see codec).

        The recorder's hot path (a 10k-task map is 10k task runs), so every
        column is one C-level ``map`` over slotted objects where it can be:
        what a batch shares (one task, its tags, its submission time) is
        copied, not read; a state's fields are read as plain attributes (never
        through its ``__dict__``: CPython then makes the state a dict object of
        its own, 64 bytes kept for as long as the state lives); and the times
        of runs whose state the engine's fast path made here are the floats
        it kept on the run (``started``/``ended``), not datetimes to convert.
        """
        infos: list[TaskRunInfo] = []
        states: list[State[Any]] = []
        task_names: list[str] = []
        tags: list[tuple[str, ...]] = []
        submitted: list[float] = []
        for batch_infos, held, at, _, _ in batches:
            n = len(batch_infos)
            infos.extend(batch_infos)
            states.extend(held)  # final states
            first = batch_infos[0]  # one submit or map: one task, the same tags
            task_names.extend([first.task_name] * n)
            tags.extend([self._tag_tuple(first.tags)] * n)
            submitted.extend([at] * n)
        count = len(infos)
        made_here = all(map(is_, map(_FINAL, infos), states))
        if made_here:  # the engine's fast path made every state here: its run holds what the state says
            state_names, run_counts = list(map(_STATE_NAME, infos)), list(map(_INFO_RUN_COUNT, infos))
            starts, ends = list(map(_STARTED, infos)), list(map(_ENDED, infos))
        else:
            state_names, run_counts = list(map(_NAME, states)), list(map(_RUN_COUNT, states))
            starts, ends = _times(infos, states)
        for name in set(state_names):
            counts[name] = counts.get(name, 0) + state_names.count(name)
        if made_here and state_names.count("Completed") == count:
            # The fast path's Completed states have no message and no result location (engine._run_plain).
            messages: list[str | None] = [None] * count
            locations: list[str | None] = messages
        else:
            messages, locations = list(map(_MESSAGE, states)), list(map(_LOCATION, states))
        columns: list[list[Any] | None] = [
            list(map(_ID, infos)), list(map(_RUN_NAME, infos)), task_names, list(map(_MAP_INDEX, infos)), tags,
            submitted, None if _KNOWN_NAMES.issuperset(state_names) else [s.type._value_ for s in states],
            state_names, messages, run_counts, starts, ends, locations,
            [history_of(s) for s in states] if max(run_counts) > 1 else [None] * count,
        ]  # fmt: skip
        return count, encode_chunk(count, columns)

    def _tag_tuple(self, tags: frozenset[str]) -> tuple[str, ...]:
        key = self._tags.get(tags)
        if key is None:
            key = self._tags.setdefault(tags, tuple(sorted(tags)))
        return key

    def _poll_cancellations(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < CANCEL_POLL_S:
            return
        self._last_poll = now
        with self._lock:
            watched = [run.id for run in self._runs.values() if run.on_cancel is not None and not run.cancelled]
        if not watched:
            return
        with self._write_lock:
            marks = ",".join("?" * len(watched))
            found = self._connection().execute(
                f"SELECT id FROM flow_runs WHERE cancel_requested = 1 AND id IN ({marks})", watched
            ).fetchall()
        for (run_id,) in found:
            with self._lock:
                run = self._runs.get(run_id)
                if run is None or run.cancelled or run.on_cancel is None:
                    continue
                run.cancelled = True
                callback = run.on_cancel
            # Shutting a runner down may block (a cluster); never in the writer.
            threading.Thread(target=callback, args=("cancelled by cancel_flow_run",), daemon=True).start()


class _Unread:
    """The futures of runs whose states are read when they are encoded (the flow run is finishing)."""

    __slots__ = ("futures",)

    def __init__(self, futures: Sequence[Any]) -> None:
        self.futures = futures


class _Map(NamedTuple):
    """What the runs of one map share, so that the store need not read it run by run (Recorder.track)."""

    name_prefix: str | None  # the default names: prefix + id[:8]
    ids: str | None  # every run's id, concatenated (32 hex digits each)


# Runs ready to write: the runs, their final states (or _Unread futures), submission time, the
# index of the first in its batch (a map's: its map index), and the map they are of (or None).
_Batch = tuple[Sequence["TaskRunInfo"], "Sequence[Any] | _Unread", float, int, "_Map | None"]
# The same, with the states read.
_Read = tuple[Sequence["TaskRunInfo"], Sequence["State[Any]"], float, int, "_Map | None"]
# A batch still held: its runs, their futures (or states), submission time, how many are
# written, and the map they are of (or None).
_Held = tuple[Sequence["TaskRunInfo"], Sequence[Any], float, int, "_Map | None"]
# Batches smaller than this are encoded together, not each in a chunk of its own.
_PLAIN_FROM = 64


def _final_state(held: Any) -> State[Any] | None:
    """The final state of a future, None where not known yet; the hot path of a 10k-task map.

    A plain TaskFuture is read directly. A runner's own future class may
    keep its state elsewhere until read (Dask keeps it on the cluster, and
    reading it would bring the result here), with a marker that is not a
    final state in its place: such a run is read only when the flow run is
    finishing, after its runner shut down and installed the states. A run
    whose state did come back (a batch of small results) is final here and
    written now, so the map's finished runs are freed as it goes.
    """
    kind = type(held)
    if kind is TaskFuture:
        return held._state  # type: ignore[no-any-return]
    if kind is State:
        return held  # type: ignore[no-any-return]
    state = getattr(held, "_state", None)
    return state if state is not None and state.type in _FINAL_TYPES else None


def _final_states(held: Sequence[Any], start: int) -> list[State[Any]]:
    """The final states of ``held[start:]`` up to the first run not final yet.

    Read a window at a time, so a pass costs about what finished since the
    last one; a window of plain futures (a map on a local runner) is read
    at C speed.
    """
    found: list[State[Any]] = []
    while start < len(held):
        window = held[start : start + _WINDOW]
        start += len(window)
        if set(map(type, window)) == _PLAIN_FUTURE:
            states = list(map(_FUTURE_STATE, window))
            unfinished = list(map(is_, states, itertools.repeat(None)))
            if True in unfinished:
                found.extend(states[: unfinished.index(True)])
                return found
            found.extend(states)
            continue
        for h in window:
            state = _final_state(h)
            if state is None:
                return found
            found.append(state)
    return found


def _states_now(held: Sequence[Any]) -> list[State[Any]]:
    """The states of runs as they are (the flow run is finishing): final, or Pending for one that never ended."""
    if set(map(type, held)) == _PLAIN_FUTURE:
        states = list(map(_FUTURE_STATE, held))
        if not any(map(is_, states, itertools.repeat(None))):
            return states
    return [s if (s := _final_state(h)) is not None else h.state for h in held]


def _split(batches: list[_Held], finishing: bool) -> tuple[list[_Batch], list[_Held]]:
    """The runs of each batch that are final, from where the last pass stopped; and the batches still held.

    A pass writes the finished runs at the front of a batch and remembers
    where it stopped, so it costs what finished since the last pass, not the
    size of the map (a million-run map is passed over twice a second). Runs
    that finish out of order wait for those before them. When the flow run is
    finishing, every run is written as it is (one that never ended: Pending).
    """
    ready: list[_Batch] = []
    rest: list[_Held] = []
    for infos, held, at, start, shape in batches:
        if finishing:
            # A long batch's states are read when it is encoded: the fast path needs no second pass.
            now = _Unread(held[start:]) if len(held) - start >= _PLAIN_FROM else _states_now(held[start:])
            ready.append((infos[start:], now, at, start, shape))
            continue
        states = _final_states(held, start)
        end = start + len(states)
        if states:
            ready.append((infos[start:end], states, at, start, shape))
            if type(infos) is list:  # a map's runs, the recorder's own list: keep no written run alive
                infos[start:end] = itertools.repeat(None, end - start)
        if end < len(held):
            rest.append((infos, held, at, end, shape))
    return ready, rest


_ID, _RUN_NAME, _MAP_INDEX, _FINAL = attrgetter("id"), attrgetter("name"), attrgetter("map_index"), attrgetter("final")
_STARTED, _ENDED = attrgetter("started"), attrgetter("ended")
_STATE_NAME, _INFO_RUN_COUNT, _FUTURE_STATE = attrgetter("state_name"), attrgetter("run_count"), attrgetter("_state")
_PLAIN_FUTURE = {TaskFuture}
_FINAL_TYPES = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
_WINDOW = 1024
_NAME, _MESSAGE, _RUN_COUNT = attrgetter("name"), attrgetter("message"), attrgetter("run_count")
_LOCATION = attrgetter("result_location")


def _times(infos: list[TaskRunInfo], states: list[State[Any]]) -> tuple[list[float | None], list[float]]:
    """The start and end times of runs, as seconds since the epoch.

    A run whose state the engine's fast path made in this process (its
    ``final`` is that very state) has both as floats already; any other
    run's state times are converted from datetimes.
    """
    finals = list(map(_FINAL, infos))
    starts: list[float | None] = []
    ends: list[float] = []
    for info, final, state in zip(infos, finals, states, strict=True):
        if final is state:
            starts.append(info.started)
            ends.append(info.ended)  # type: ignore[arg-type]  # set with final
        else:
            starts.append(_timestamp(state.start_time))
            ends.append(state.timestamp.timestamp())
    return starts, ends


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


_recorders: dict[tuple[int, Path], Recorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(home: Path) -> Recorder:
    """The recorder of this process for the store under ``home``."""
    key = (os.getpid(), Path(home))  # a forked child gets its own
    with _recorders_lock:
        recorder = _recorders.get(key)
        if recorder is None:
            if not _recorders:
                atexit.register(_flush_all)
            recorder = _recorders[key] = Recorder(Path(home))
        return recorder


def _flush_all() -> None:
    for (pid, _), recorder in list(_recorders.items()):
        if pid == os.getpid():
            try:
                recorder.flush()
            except Exception:
                logger.exception("flushing the run store in %s at exit failed", recorder.home)
