"""Controlling recorded flow runs: wait for one, read a task run's result, rename, cancel."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from taskyard.exceptions import RunNotFound
from taskyard.runs.models import FlowRun, TaskRun
from taskyard.runs.reading import FINAL_TYPES, flow_run_row, open_store, to_flow_run
from taskyard.store.db import write

__all__ = ("wait_for_flow_run", "get_task_run_result", "rename_flow_run", "cancel_flow_run")

logger = logging.getLogger("taskyard.runs.control")
_POLL_MIN_S = 0.05
_POLL_MAX_S = 0.5


def wait_for_flow_run(
    run_id: str, timeout: float | None = None, *, stream_states: bool = False, stream_logs: bool = False
) -> FlowRun:
    """Wait until a flow run is final and return its record.

    Args:
        run_id: The flow run's id (or a unique prefix).
        timeout: Seconds to wait at most; None waits as long as it takes.
        stream_states: Log each state the run enters (logger ``taskyard.runs.control``).
        stream_logs: Replay the run's recorded log records into this process's
            loggers as they arrive.

    Raises:
        RunNotFound: No such flow run.
        TimeoutError: The run was not final within ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    conn = open_store()
    try:
        full = flow_run_row(conn, run_id)["id"]
        seen_states = seen_logs = 0
        delay = _POLL_MIN_S
        while True:
            row = flow_run_row(conn, full)
            if stream_states:
                seen_states = _stream_states(conn, full, row["name"], seen_states)
            if stream_logs:
                seen_logs = _stream_logs(conn, full, seen_logs)
            if row["state_type"] in FINAL_TYPES:
                return to_flow_run(conn, row)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"flow run {row['name']!r} ({full}) was still {row['state_name']} after {timeout} s")
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 1.5, _POLL_MAX_S)
    finally:
        conn.close()


def _stream_states(conn: sqlite3.Connection, run_id: str, name: str, seen: int) -> int:
    rows = conn.execute(
        "SELECT type, name, message FROM flow_run_states WHERE flow_run_id = ? ORDER BY timestamp, rowid LIMIT -1 OFFSET ?",
        (run_id, seen),
    ).fetchall()
    for _, state_name, message in rows:
        logger.info("Flow run %r entered state %r%s", name, state_name, f": {message}" if message else "")
    return seen + len(rows)


def _stream_logs(conn: sqlite3.Connection, run_id: str, seen: int) -> int:
    rows = conn.execute(
        "SELECT rowid, timestamp, level, logger, message FROM logs WHERE flow_run_id = ? AND rowid > ? ORDER BY rowid",
        (run_id, seen),
    ).fetchall()
    for rowid, created, level, name, message in rows:
        record = logging.LogRecord(name, level, "(flow run)", 0, message, None, None)
        record.created = created
        record.taskyard_from_store = True  # already recorded: never recorded again
        logging.getLogger(name).handle(record)
        seen = rowid
    return seen


def get_task_run_result(flow_run_id: str, task_name: str, map_index: int = -1, timeout: float | None = None) -> Any:
    """The result of a task run of a flow run, once that flow run is final.

    Args:
        flow_run_id: The flow run's id (or a unique prefix).
        task_name: The name of the task.
        map_index: Which run of a mapped task; ``-1`` gives every run's result
            in map order for a mapped task, and the result of the (last) run
            of a task that was not mapped.
        timeout: Seconds to wait for the flow run at most.

    Raises:
        RunNotFound: No such flow run, or it ran no such task (run).
        MissingResultError: The result was not persisted (set ``persist_result=True``).
        Exception: The task run's own error, when it did not complete.
        TimeoutError: The flow run was not final within ``timeout`` seconds.
    """
    run = wait_for_flow_run(flow_run_id, timeout)
    runs = [r for r in run.task_runs if r.task_name == task_name]
    if not runs:
        names = sorted({r.task_name for r in run.task_runs})
        raise RunNotFound(
            f"flow run {run.name!r} ran no task {task_name!r} (its tasks: {', '.join(names) or 'none recorded'})"
        )
    mapped = sorted((r for r in runs if r.map_index >= 0), key=lambda r: r.map_index)
    if map_index == -1:
        if mapped:
            return [_result(r) for r in mapped]
        return _result(runs[-1])
    chosen = [r for r in mapped if r.map_index == map_index]
    if not chosen:
        raise RunNotFound(f"task {task_name!r} of flow run {run.name!r} has no run with map index {map_index} (it has {len(mapped)})")
    return _result(chosen[-1])


def _result(task_run: TaskRun) -> Any:
    return task_run.state.result()


def rename_flow_run(run_id: str, name: str) -> None:
    """Give a recorded flow run a new name.

    Raises:
        RunNotFound: No such flow run.
        ValueError: ``name`` is empty.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a flow run name must be a non-empty string, not {name!r}")
    conn = open_store()
    try:
        full = flow_run_row(conn, run_id)["id"]
        write(conn, lambda c: c.execute("UPDATE flow_runs SET name = ? WHERE id = ?", (name, full)))
    finally:
        conn.close()


def cancel_flow_run(run_id: str) -> FlowRun:
    """Cancel a flow run and return its record as it is now.

    A run that has not started (Scheduled, or Pending) is Cancelled at once
    and never starts. A running one is marked Cancelling; its process notices
    within about two seconds, cancels its outstanding task runs on whatever
    runner it uses, starts no new one, runs its ``on_cancellation`` hooks and
    ends Cancelled (use :func:`wait_for_flow_run` to wait for that). A final
    run is left as it is.

    Raises:
        RunNotFound: No such flow run.
    """
    conn = open_store()
    try:
        row = flow_run_row(conn, run_id)
        full = row["id"]
        now = time.time()

        def body(c: sqlite3.Connection) -> None:
            not_started = c.execute(
                "UPDATE flow_runs SET state_type = 'CANCELLED', state_name = 'Cancelled', state_message = ?, "
                "state_time = ?, end_time = ?, cancel_requested = 1 WHERE id = ? AND state_type IN ('SCHEDULED', 'PENDING')",
                ("cancelled before it started", now, now, full),
            ).rowcount
            if not_started:
                _state_row(c, full, "CANCELLED", "Cancelled", "cancelled before it started", now)
                return
            running = c.execute(
                "UPDATE flow_runs SET state_type = 'CANCELLING', state_name = 'Cancelling', state_time = ?, "
                "cancel_requested = 1 WHERE id = ? AND state_type IN ('RUNNING', 'PAUSED')",
                (now, full),
            ).rowcount
            if running:
                _state_row(c, full, "CANCELLING", "Cancelling", "cancel_flow_run was called", now)

        write(conn, body)
        return to_flow_run(conn, flow_run_row(conn, full))
    finally:
        conn.close()


def _state_row(c: sqlite3.Connection, run_id: str, type_: str, name: str, message: str, at: float) -> None:
    c.execute(
        "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, ?, ?, ?, ?)",
        (run_id, type_, name, message, at),
    )

