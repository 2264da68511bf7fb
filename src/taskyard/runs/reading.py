"""Reading run records from the store, and noticing runs whose process died.

A flow run that is not final is checked when it is read: if the process
running it (or waiting to start it) is gone from this machine, or its
heartbeat is older than ``STALE_AFTER_S`` (a run on another machine), it is
written as Crashed, once, and read back as such.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskyard.exceptions import RunNotFound
from taskyard.runs.models import FlowRun, TaskRun
from taskyard.runs.stored import StoredResult
from taskyard.settings import current_settings
from taskyard.states import State, StateType
from taskyard.store.codec import TASK_FIELDS, decode_chunk
from taskyard.pids import pid_alive
from taskyard.store.db import HOST, connect, write
from taskyard.store.recorder import HEARTBEAT_S

__all__ = (
    "store_home",
    "open_store",
    "resolve_id",
    "flow_run_row",
    "to_flow_run",
    "task_runs_of",
    "read_flow_run",
    "list_flow_runs",
    "STALE_AFTER_S",
    "FINAL_TYPES",
)

STALE_AFTER_S = 12 * HEARTBEAT_S
FINAL_TYPES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_COLUMNS = (
    "id, name, flow_name, state_type, state_name, state_message, state_time, parameters, tags, task_runner, "
    "parent_task_run_id, parent_flow_run_id, created, start_time, end_time, run_count, result_location, pid, host, "
    "heartbeat, cancel_requested, scheduled_start, task_counts, deployment"
)


def store_home() -> Path:
    """The TASKYARD_HOME in effect: the current flow run's (inside a run, wherever it runs), else the environment's."""
    from taskyard.context import flow_run_var

    current = flow_run_var.get()
    if current is not None and current.home:
        return Path(current.home)
    return current_settings().home


def open_store(home: Path | str | None = None) -> sqlite3.Connection:
    """A connection to the run store of ``home`` (default: :func:`store_home`)."""
    conn = connect(home if home is not None else store_home())
    conn.row_factory = sqlite3.Row
    return conn


def resolve_id(conn: sqlite3.Connection, run_id: str) -> str:
    """The full id of the flow run ``run_id`` names (a full id, or a unique prefix of one).

    Raises:
        RunNotFound: No run, or several, match.
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(f"{run_id!r} is not a flow run id")
    if conn.execute("SELECT 1 FROM flow_runs WHERE id = ?", (run_id,)).fetchone():
        return run_id
    if len(run_id) >= 4 and all(c in "0123456789abcdef" for c in run_id):
        found = conn.execute("SELECT id FROM flow_runs WHERE id LIKE ? LIMIT 2", (run_id + "%",)).fetchall()
        if len(found) == 1:
            return str(found[0][0])
        if len(found) > 1:
            raise RunNotFound(f"{run_id!r} is the start of several flow run ids; give more of it")
    raise RunNotFound(f"no flow run {run_id!r} in the run store {conn_path(conn)}")


def conn_path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"


def flow_run_row(conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
    """The row of a flow run, with a dead run marked Crashed first.

    Raises:
        RunNotFound: No such run.
    """
    full = resolve_id(conn, run_id)
    row = conn.execute(f"SELECT {_COLUMNS} FROM flow_runs WHERE id = ?", (full,)).fetchone()
    if row is None:
        raise RunNotFound(f"no flow run {run_id!r}")
    if row["state_type"] not in FINAL_TYPES and _lost(row):
        _mark_crashed(conn, row)
        row = conn.execute(f"SELECT {_COLUMNS} FROM flow_runs WHERE id = ?", (full,)).fetchone()
    return row  # type: ignore[no-any-return]


def _lost(row: sqlite3.Row) -> bool:
    pid, host, beat = row["pid"], row["host"], row["heartbeat"]
    if pid is None:
        return False  # being started: the launcher records the pid at once
    if host == HOST:
        return not pid_alive(int(pid))
    return beat is not None and time.time() - float(beat) > STALE_AFTER_S


def _mark_crashed(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    now = time.time()
    if row["host"] == HOST:
        message = f"the process running it (pid {row['pid']}) is gone: it was killed or died"
    else:
        message = f"no heartbeat from its process (pid {row['pid']} on {row['host']}) for over {STALE_AFTER_S:.0f} s"

    def body(c: sqlite3.Connection) -> None:
        changed = c.execute(
            "UPDATE flow_runs SET state_type = 'CRASHED', state_name = 'Crashed', state_message = ?, state_time = ?, "
            f"end_time = ? WHERE id = ? AND state_type NOT IN {FINAL_TYPES}",
            (message, now, now, row["id"]),
        ).rowcount
        if changed:
            c.execute(
                "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, 'CRASHED', 'Crashed', ?, ?)",
                (row["id"], message, now),
            )

    write(conn, body)


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _at(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _state(type_: str, name: str, message: str | None, at: float, run_count: int = 0, location: str | None = None, what: str = "") -> State[Any]:
    data = StoredResult(location, what) if type_ == "COMPLETED" else None
    return State(
        type=StateType(type_), name=name, message=message, timestamp=_at(at), data=data,
        run_count=run_count, result_location=location,
    )  # fmt: skip


def to_flow_run(conn: sqlite3.Connection, row: sqlite3.Row, *, with_task_runs: bool = True) -> FlowRun:
    """A FlowRun model from its row (and its task runs and states, unless told not to)."""
    run_id = row["id"]
    state = _state(
        row["state_type"], row["state_name"], row["state_message"], row["state_time"], row["run_count"],
        row["result_location"], f"flow run {row['name']!r}",
    )  # fmt: skip
    history: list[State[Any]] = []
    task_runs: list[TaskRun] = []
    if with_task_runs:
        history = [
            _state(r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT type, name, message, timestamp FROM flow_run_states WHERE flow_run_id = ? ORDER BY timestamp, rowid",
                (run_id,),
            )
        ]
        task_runs = task_runs_of(conn, run_id)
    return FlowRun(
        id=run_id,
        name=row["name"],
        flow_name=row["flow_name"],
        state=state,
        parameters=json.loads(row["parameters"] or "{}"),
        tags=json.loads(row["tags"] or "[]"),
        task_runner=row["task_runner"],
        parent_task_run_id=row["parent_task_run_id"],
        parent_flow_run_id=row["parent_flow_run_id"],
        start_time=_time(row["start_time"]),
        end_time=_time(row["end_time"]),
        task_runs=task_runs,
        task_counts=json.loads(row["task_counts"] or "{}"),
        state_history=history,
        created=_time(row["created"]),
        scheduled_start_time=_time(row["scheduled_start"]),
        deployment=row["deployment"],
    )


def task_runs_of(conn: sqlite3.Connection, flow_run_id: str) -> list[TaskRun]:
    """The recorded task runs of a flow run, in submission order."""
    runs = []
    for (data,) in conn.execute("SELECT data FROM task_run_chunks WHERE flow_run_id = ? ORDER BY rowid", (flow_run_id,)):
        for values in decode_chunk(data):
            runs.append(_task_run(flow_run_id, dict(zip(TASK_FIELDS, values, strict=True))))
    runs.sort(key=lambda r: (r.submitted_time or r.end_time or datetime.min.replace(tzinfo=UTC), r.map_index))
    return runs


def _task_run(flow_run_id: str, f: dict[str, Any]) -> TaskRun:
    state = _state(f["state_type"], f["state_name"], f["state_message"], f["end_time"], f["run_count"], f["result_location"], f"task run {f['name']!r}")
    history = []
    if f["submitted"] is not None:
        history.append(_state("PENDING", "Pending", None, f["submitted"]))
    if f["start_time"] is not None:
        history.append(_state("RUNNING", "Running", None, f["start_time"]))
    for type_, name, message, at in f["history"] or ():
        history.append(_state(type_, name, message, at))
    return TaskRun(
        id=f["id"], name=f["name"], task_name=f["task_name"], map_index=f["map_index"], state=state,
        tags=list(f["tags"]), run_count=f["run_count"], start_time=_time(f["start_time"]),
        end_time=_time(f["end_time"]), result_location=f["result_location"], flow_run_id=flow_run_id,
        submitted_time=_time(f["submitted"]), state_history=history,
    )  # fmt: skip


def read_flow_run(run_id: str) -> FlowRun:
    """The record of a flow run, with its task runs and states.

    ``run_id`` is its id (or a unique prefix of it). A run whose process
    died without ending it reads as Crashed.

    Raises:
        RunNotFound: No such flow run in the store of TASKYARD_HOME.
    """
    conn = open_store()
    try:
        return to_flow_run(conn, flow_run_row(conn, run_id))
    finally:
        conn.close()


def list_flow_runs(
    flow_name: str | None = None,
    state: str | StateType | None = None,
    since: datetime | float | None = None,
    limit: int = 100,
    *,
    deployment: str | None = None,
) -> list[FlowRun]:
    """Recorded flow runs, newest first (without their task runs; see ``task_counts``).

    Args:
        flow_name: Only runs of this flow.
        state: Only runs in this state: a type (``"FAILED"``, ``StateType.FAILED``)
            or a name (``"Crashed"``, ``"TimedOut"``), any case.
        since: Only runs created at or after this time (a datetime, or POSIX seconds).
        limit: At most this many.
        deployment: Only runs of this served deployment (``"flow/deployment"``).
    """
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number ≥ 1, not {limit!r}")
    where: list[str] = []
    args: list[Any] = []
    if flow_name is not None:
        where.append("flow_name = ?")
        args.append(flow_name)
    if deployment is not None:
        where.append("deployment = ?")
        args.append(deployment)
    if since is not None:
        where.append("created >= ?")
        args.append(since.timestamp() if isinstance(since, datetime) else float(since))
    conn = open_store()
    try:
        _crash_check_open_runs(conn)
        sql = f"SELECT {_COLUMNS} FROM flow_runs {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY created DESC, rowid DESC"
        runs = []
        wanted = str(state.value if isinstance(state, StateType) else state).upper() if state is not None else None
        for row in conn.execute(sql, args):
            if wanted is not None and wanted not in (row["state_type"], row["state_name"].upper()):
                continue
            runs.append(to_flow_run(conn, row, with_task_runs=False))
            if len(runs) >= limit:
                break
        return runs
    finally:
        conn.close()


def _crash_check_open_runs(conn: sqlite3.Connection) -> None:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM flow_runs WHERE state_type NOT IN {FINAL_TYPES}").fetchall()
    for row in rows:
        if _lost(row):
            _mark_crashed(conn, row)
