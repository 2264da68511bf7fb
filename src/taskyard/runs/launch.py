"""``start_flow_run``: a flow run in a process of its own, recorded before it starts.

::

    start_flow_run(flow, parameters, …)
      │ find the flow (object, "module:fn", "file.py:fn", or a recorded flow name)
      │ bind + validate the parameters          ← bad input raises here
      │ one transaction: flow_runs row (Scheduled/Pending) + launch row,
      │   or the run already holding the idempotency key → its id, nothing starts
      ▼
    python -m taskyard.runs.child RUN_ID     (new session: outlives the caller)
      │ waits for scheduled_start_time, claims the run (unless cancelled)
      └ runs the flow under RUN_ID; the recorder writes it as any run
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from taskyard.context import flow_run_var, task_run_var
from taskyard.dispatch import new_run_id
from taskyard.exceptions import FlowRunError, RunNotFound
from taskyard.flowrecord import flow_source
from taskyard.flows import Flow
from taskyard.runs.control import wait_for_flow_run
from taskyard.runs.reading import open_store, store_home
from taskyard.store.codec import dumps_json
from taskyard.store.db import HOST, write

__all__ = ("start_flow_run",)

_attempt_calls: dict[str, tuple[int, dict[str, int]]] = {}
_attempt_lock = threading.Lock()


def start_flow_run(
    flow: Flow[..., Any] | str,
    parameters: dict[str, Any] | None = None,
    *,
    wait: bool = False,
    run_name: str | None = None,
    idempotency_key: str | None = None,
    scheduled_start_time: datetime | None = None,
    task_runner: str | None = None,
    tags: list[str] | tuple[str, ...] | set[str] | None = None,
) -> str:
    """Start a flow run in a new process and return its id.

    The process outlives the caller; the run is recorded like any other
    (read it with :func:`read_flow_run`, wait with :func:`wait_for_flow_run`).

    Args:
        flow: A flow object, ``"module:function"``, ``"path/to/file.py:function"``,
            or the name of a flow that has run before (the store remembers
            where it came from), or ``"flow name/deployment name"``: a run
            of a served deployment (``Flow.serve``, ``taskyard.serve``), which
            the process serving it starts; it waits Pending while none does.
        parameters: The flow's parameters, validated here against its type
            hints (for a deployment: on top of its default parameters).
        wait: Block until the run is final. If it did not complete, raise
            :class:`~taskyard.exceptions.FlowRunError` carrying its final State.
        run_name: The run's name (default ``<flow name>-<short id>``).
        idempotency_key: A key already used returns that run's id and starts
            nothing. Inside a task run it defaults to one derived from the task
            run, so a retried task never starts a second flow run.
        scheduled_start_time: Start then (a datetime; naive means local time);
            until then the run is Scheduled.
        task_runner: Run the flow on this registered runner (overrides its own).
        tags: Tags for the flow run.

    Raises:
        RunNotFound: ``flow`` is a name no recorded run (or served deployment) had.
        LookupError, ValueError, TypeError: ``flow`` cannot be loaded.
        ParameterValidationError: A parameter does not fit the flow.
        FlowRunError: ``wait=True`` and the run did not complete.
    """
    home = store_home()
    conn = open_store(home)
    try:
        if isinstance(flow, str) and ":" not in flow and "/" in flow:
            run_id = _start_deployment_run(
                conn, flow, dict(parameters or {}), run_name, idempotency_key, _timestamp(scheduled_start_time), task_runner, tags
            )
        else:
            run_id = _start_own_process(
                conn, home, flow, parameters, run_name, idempotency_key, scheduled_start_time, task_runner, tags
            )
    finally:
        conn.close()
    if wait:
        run = wait_for_flow_run(run_id)
        if not run.state.is_completed():
            raise FlowRunError(
                f"flow run {run.name!r} ({run_id}) ended {run.state.name}: {run.state.message or 'no message'}",
                run_id,
                run.state,
            )
    return run_id


def _start_own_process(
    conn: sqlite3.Connection,
    home: Path,
    flow: Any,
    parameters: dict[str, Any] | None,
    run_name: str | None,
    idempotency_key: str | None,
    scheduled_start_time: datetime | None,
    task_runner: str | None,
    tags: Any,
) -> str:
    flow_obj, ref, blob = _flow_and_launch(conn, flow)
    params = _validated(flow_obj, dict(parameters or {}))
    if task_runner is not None:
        from taskyard.flows import task_runner_override

        with task_runner_override(task_runner):
            pass  # an unknown name fails here, before any process starts
    start_at = _timestamp(scheduled_start_time)
    key = idempotency_key if idempotency_key is not None else _key_from_task_run(flow_obj.name)
    run_id, created = _insert(conn, flow_obj, params, run_name, key, start_at, task_runner, sorted(set(tags or ())), ref, blob)
    if created:
        _spawn(conn, run_id, home)
    return run_id


def _start_deployment_run(
    conn: sqlite3.Connection,
    name: str,
    parameters: dict[str, Any],
    run_name: str | None,
    idempotency_key: str | None,
    start_at: float | None,
    task_runner: str | None,
    tags: Any,
) -> str:
    """A Pending run of a served deployment: the process serving it starts it."""
    from taskyard.loading import load_flow
    from taskyard.runs.deployed import deployment_parameters, insert_deployment_run

    row, params = deployment_parameters(conn, name, parameters)
    if row["flow_ref"]:
        try:
            flow_obj = load_flow(row["flow_ref"])
        except Exception:  # not importable here: the serving process checks them
            flow_obj = None
        if flow_obj is not None:
            params = _validated(flow_obj, params)
    if task_runner is not None:
        from taskyard.flows import task_runner_override

        with task_runner_override(task_runner):
            pass  # an unknown name fails here
    key = idempotency_key if idempotency_key is not None else _key_from_task_run(row["flow_name"])
    all_tags = sorted(set(json.loads(row["tags"])) | set(tags or ()))
    run_id, _ = insert_deployment_run(
        conn, name, row["flow_name"], params, all_tags, run_name=run_name, idempotency_key=key,
        scheduled_start=start_at, task_runner=task_runner,
    )  # fmt: skip
    return run_id


def _flow_and_launch(conn: sqlite3.Connection, flow: Any) -> tuple[Flow[..., Any], str, bytes | None]:
    """The flow, how the child process loads it (a ref), and a pickled flow for objects."""
    from taskyard.loading import load_flow

    if isinstance(flow, Flow):
        import cloudpickle

        from taskyard.runners.base import TaskRunner

        # By value where it cannot be imported (a script's __main__), by reference otherwise.
        # A runner instance holds locks and pools: it travels as its class and arguments.
        runner = flow.task_runner
        if isinstance(runner, TaskRunner):
            args, kwargs = runner._init_args
            packed = {"flow": flow.with_options(task_runner=None), "runner": (type(runner), args, kwargs)}
        else:
            packed = {"flow": flow, "runner": None}
        return flow, flow_source(flow) or f"<object {flow.name}>", cloudpickle.dumps(packed)
    if not isinstance(flow, str):
        raise TypeError(f"flow must be a @flow object, 'module:function', 'file.py:function' or a flow name, not {flow!r}")
    if ":" in flow:
        return load_flow(flow), flow, None
    row = conn.execute("SELECT source FROM flows WHERE name = ?", (flow,)).fetchone()
    if row is None:
        raise RunNotFound(
            f"no flow named {flow!r} has run here; pass the flow object, 'module:function' or 'file.py:function'"
        )
    return load_flow(row[0]), row[0], None


def _validated(flow: Flow[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    params = flow.binder.bind((), parameters)
    if flow.should_validate_parameters:
        params = flow._validator(params)
    return params


def _timestamp(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise TypeError(f"scheduled_start_time must be a datetime, not {moment!r}")
    return moment.timestamp()


def _key_from_task_run(flow_name: str) -> str | None:
    """Inside a task run: a key for the n-th start of this flow in this attempt."""
    task_run = task_run_var.get()
    if task_run is None:
        return None
    with _attempt_lock:
        attempt, counts = _attempt_calls.get(task_run.id, (task_run.run_count, {}))
        if attempt != task_run.run_count:  # a retry starts counting again: same keys
            counts = {}
        counts[flow_name] = n = counts.get(flow_name, 0) + 1
        _attempt_calls[task_run.id] = (task_run.run_count, counts)
    return f"task-run:{task_run.id}:{flow_name}:{n}"


def _insert(
    conn: sqlite3.Connection,
    flow: Flow[..., Any],
    params: dict[str, Any],
    run_name: str | None,
    key: str | None,
    start_at: float | None,
    task_runner: str | None,
    tags: list[str],
    ref: str,
    blob: bytes | None,
) -> tuple[str, bool]:
    import cloudpickle

    run_id = new_run_id()
    name = run_name or f"{flow.name}-{run_id[:8]}"
    now = time.time()
    scheduled = start_at is not None and start_at > now
    state = ("SCHEDULED", "Scheduled") if scheduled else ("PENDING", "Pending")
    parent_task = task_run_var.get()
    parent_flow = flow_run_var.get()
    launch = cloudpickle.dumps({"flow": blob, "parameters": params, "tags": tags})

    def body(c: sqlite3.Connection) -> tuple[str, bool]:
        if key is not None:
            found = c.execute("SELECT id FROM flow_runs WHERE idempotency_key = ?", (key,)).fetchone()
            if found is not None:
                return str(found[0]), False
        c.execute(
            "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, state_time, parameters, tags, task_runner, "
            "parent_task_run_id, parent_flow_run_id, created, idempotency_key, scheduled_start) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id, name, flow.name, *state, now, dumps_json(params), dumps_json(tags), task_runner,
                parent_task.id if parent_task else None, parent_flow.id if parent_flow else None, now, key,
                start_at if scheduled else None,
            ),
        )  # fmt: skip
        c.execute(
            "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, ?, ?, ?, ?)",
            (run_id, *state, "started by start_flow_run", now),
        )
        c.execute(
            "INSERT INTO launches (flow_run_id, flow_ref, parameters, task_runner) VALUES (?, ?, ?, ?)",
            (run_id, ref, launch, task_runner),
        )
        if not ref.startswith("<"):  # remembered: the flow can be started by name later
            c.execute("INSERT OR REPLACE INTO flows (name, source, updated) VALUES (?, ?, ?)", (flow.name, ref, now))
        return run_id, True

    return write(conn, body)


def _spawn(conn: sqlite3.Connection, run_id: str, home: Path) -> None:
    logs = home / "flow-run-output"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TASKYARD_HOME": str(home), "TASKYARD_RECORD": "1"}
    # The child imports what the caller could: its flows' modules by reference.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    with open(logs / f"{run_id}.log", "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "taskyard.runs.child", run_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.getcwd(),
            start_new_session=True,  # outlives the caller, and its Ctrl-C
            close_fds=True,
        )
    # Reaped when it ends, so it never lingers as a zombie of the caller.
    threading.Thread(target=child.wait, name=f"taskyard-reap-{child.pid}", daemon=True).start()
    sql = "UPDATE flow_runs SET pid = ?, host = ?, heartbeat = ? WHERE id = ? AND pid IS NULL"
    write(conn, lambda c: c.execute(sql, (child.pid, HOST, time.time(), run_id)))
