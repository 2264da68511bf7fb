"""The store's schema, as a list of migrations; ``PRAGMA user_version`` is the version.

A database is brought to the latest version when it is opened: each
migration runs once, in order, in one transaction with its version bump.
Add a migration at the end; never change one that has shipped.

Task runs are stored in *chunks*: one row holds the task runs of one flow run
that the writer found finished in one pass, as a compact pickle of plain
tuples (see :mod:`taskyard.store.codec`). A row per task run costs more than
the task run itself on a fast runner; a chunk costs well under a microsecond per
task run, which keeps recording off the hot path.
"""

from __future__ import annotations

import sqlite3

__all__ = ("MIGRATIONS", "LATEST", "migrate")

MIGRATIONS: tuple[str, ...] = (
    # 1: flow runs, their states, task-run chunks, launches, where flows come from.
    """
    CREATE TABLE flows (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE flow_runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        flow_name TEXT NOT NULL,
        state_type TEXT NOT NULL,
        state_name TEXT NOT NULL,
        state_message TEXT,
        state_time REAL NOT NULL,
        parameters TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        task_runner TEXT,
        parent_task_run_id TEXT,
        parent_flow_run_id TEXT,
        created REAL NOT NULL,
        start_time REAL,
        end_time REAL,
        run_count INTEGER NOT NULL DEFAULT 0,
        result_location TEXT,
        pid INTEGER,
        host TEXT,
        heartbeat REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT UNIQUE,
        scheduled_start REAL,
        task_counts TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX flow_runs_created ON flow_runs (created);
    CREATE INDEX flow_runs_flow ON flow_runs (flow_name, created);
    CREATE INDEX flow_runs_parent ON flow_runs (parent_flow_run_id);
    CREATE TABLE flow_run_states (
        flow_run_id TEXT NOT NULL,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        message TEXT,
        timestamp REAL NOT NULL
    );
    CREATE INDEX flow_run_states_run ON flow_run_states (flow_run_id, timestamp);
    CREATE TABLE task_run_chunks (
        flow_run_id TEXT NOT NULL,
        count INTEGER NOT NULL,
        format INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX task_run_chunks_run ON task_run_chunks (flow_run_id);
    CREATE TABLE launches (
        flow_run_id TEXT PRIMARY KEY,
        flow_ref TEXT NOT NULL,
        parameters BLOB NOT NULL,
        task_runner TEXT
    );
    """,
    # 2: log records of the run loggers.
    """
    CREATE TABLE logs (
        flow_run_id TEXT NOT NULL,
        task_run_id TEXT,
        timestamp REAL NOT NULL,
        level INTEGER NOT NULL,
        logger TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX logs_run ON logs (flow_run_id, timestamp);
    """,
    # 3: the queue of deferred task runs (apply_async/delay), what they wait
    #    for, served deployments, and the deployment a flow run came from.
    """
    CREATE TABLE deferred_runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        task_name TEXT NOT NULL,
        state_type TEXT NOT NULL,
        state_name TEXT NOT NULL,
        state_message TEXT,
        state_time REAL NOT NULL,
        call BLOB NOT NULL,
        parameters TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        waits INTEGER NOT NULL DEFAULT 0,
        map_index INTEGER NOT NULL DEFAULT -1,
        flow_run_id TEXT,
        created REAL NOT NULL,
        claims INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        run_count INTEGER NOT NULL DEFAULT 0,
        start_time REAL,
        end_time REAL,
        worker TEXT,
        pid INTEGER,
        host TEXT,
        lease_until REAL,
        result_location TEXT,
        error BLOB
    );
    CREATE INDEX deferred_runs_ready ON deferred_runs (state_type, task_name, created);
    CREATE INDEX deferred_runs_worker ON deferred_runs (worker, state_type);
    CREATE TABLE deferred_waits (
        run_id TEXT NOT NULL,
        upstream_id TEXT NOT NULL
    );
    CREATE INDEX deferred_waits_run ON deferred_waits (run_id);
    CREATE TABLE deployments (
        name TEXT PRIMARY KEY,
        flow_name TEXT NOT NULL,
        flow_ref TEXT,
        parameters TEXT NOT NULL DEFAULT '{}',
        schedules TEXT NOT NULL DEFAULT '[]',
        paused INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL DEFAULT '[]',
        updated REAL NOT NULL,
        pid INTEGER,
        host TEXT,
        heartbeat REAL
    );
    ALTER TABLE flow_runs ADD COLUMN deployment TEXT;
    CREATE INDEX flow_runs_deployment ON flow_runs (deployment, state_type);
    """,
    # 4: a deferred run's small result, kept in its row (a signed result
    #    record) instead of a file of its own.
    """
    ALTER TABLE deferred_runs ADD COLUMN result BLOB;
    """,
)
LATEST = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = LATEST) -> int:
    """Apply the migrations the database lacks, up to ``target``; return its version.

    Safe against several processes opening a new database at once: the
    version is read again inside the write transaction.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version >= target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number in range(version + 1, target + 1):
            for statement in MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(version, target)
