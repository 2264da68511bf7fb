"""Runs of served deployments: recorded Pending here, started by the process serving the deployment.

``start_flow_run("flow/deployment", …)`` and a server's own schedule both
call :func:`insert_deployment_run`; the server (taskyard.background.serving)
claims the Pending runs of its deployments. While nothing serves a
deployment its runs wait, Pending.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from taskyard.dispatch import new_run_id
from taskyard.exceptions import RunNotFound
from taskyard.store.codec import dumps_json
from taskyard.store.db import write

__all__ = ("DEPLOYMENT_REF", "find_deployment", "insert_deployment_run", "deployment_parameters")

DEPLOYMENT_REF = "deployment:"


def find_deployment(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    """The row of the deployment ``"flow/deployment"``, or None."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT name, flow_name, flow_ref, parameters, tags FROM deployments WHERE name = ?", (name,)
    ).fetchone()
    return row


def deployment_parameters(conn: sqlite3.Connection, name: str, given: dict[str, Any]) -> tuple[sqlite3.Row, dict[str, Any]]:
    """The deployment's row and its default parameters updated with ``given``.

    Raises:
        RunNotFound: No deployment of that name was ever served here.
    """
    row = find_deployment(conn, name)
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM deployments ORDER BY name LIMIT 20")]
        raise RunNotFound(
            f"no deployment {name!r} has been served here (known: {', '.join(known) or 'none'}); "
            "serve it first with flow.serve(...) or taskyard.serve(...)"
        )
    return row, {**json.loads(row["parameters"]), **given}


def insert_deployment_run(
    conn: sqlite3.Connection,
    deployment: str,
    flow_name: str,
    parameters: dict[str, Any],
    tags: list[str],
    *,
    run_name: str | None = None,
    idempotency_key: str | None = None,
    scheduled_start: float | None = None,
    task_runner: str | None = None,
    why: str = "started by start_flow_run",
) -> tuple[str, bool]:
    """Record a Pending (or Scheduled, for a future start) run of ``deployment``; ``(id, created)``.

    A repeated ``idempotency_key`` returns the first run's id and records nothing.
    """
    import cloudpickle

    run_id = new_run_id()
    name = run_name or f"{flow_name}-{run_id[:8]}"
    now = time.time()
    later = scheduled_start is not None and scheduled_start > now
    state = ("SCHEDULED", "Scheduled") if later else ("PENDING", "Pending")
    launch = cloudpickle.dumps({"flow": None, "parameters": parameters, "tags": tags})

    def body(c: sqlite3.Connection) -> tuple[str, bool]:
        if idempotency_key is not None:
            found = c.execute("SELECT id FROM flow_runs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if found is not None:
                return str(found[0]), False
        c.execute(
            "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, state_time, parameters, tags, task_runner, "
            "created, idempotency_key, scheduled_start, deployment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, name, flow_name, *state, now, dumps_json(parameters), dumps_json(tags), task_runner, now,
             idempotency_key, scheduled_start, deployment),
        )  # fmt: skip
        c.execute(
            "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, ?, ?, ?, ?)",
            (run_id, *state, why, now),
        )
        c.execute(
            "INSERT INTO launches (flow_run_id, flow_ref, parameters, task_runner) VALUES (?, ?, ?, ?)",
            (run_id, DEPLOYMENT_REF + deployment, launch, task_runner),
        )
        return run_id, True

    return write(conn, body)
