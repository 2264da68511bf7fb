"""The queue of deferred task runs: the SQL every producer, worker and waiting future shares.

::

    apply_async / delay / map(deferred=True)
        enqueue ─ one transaction: rows Pending (+ what each waits for)
    task worker (any process, any number of them)
        claim ── one UPDATE … WHERE id IN (oldest Pending runs of my tasks whose
                 upstreams are final) RETURNING …: Pending → Running, with a lease
        renew ── the worker's leases pushed forward while it holds runs
        finish ─ Running → final, only while the worker still holds the lease
        hand_back ─ Running → Pending (a worker stopping before it ran them)
    anyone (workers, waiting futures)
        recover_lost ─ a Running run whose worker is gone (a dead pid on this
                 machine, or a lapsed lease) goes back to Pending while its
                 retries allow, else ends Crashed

A claim is a single UPDATE in a write transaction (``BEGIN IMMEDIATE``), so
two workers never claim the same run, in any number of processes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from taskyard.pids import pid_alive
from taskyard.store.db import HOST, write

__all__ = (
    "LEASE_S",
    "FINAL",
    "QueuedRun",
    "Claimed",
    "Finished",
    "enqueue",
    "claim",
    "finish",
    "renew",
    "hand_back",
    "recover_lost",
    "read_rows",
)

# A worker holds a run for this long without renewing it; it renews every
# third of it. A run on this machine whose worker process is gone is noticed
# sooner: at the next check of any worker or waiting future (about 1 s).
LEASE_S = 30.0
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_FINAL_SQL = "('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')"


class QueuedRun(NamedTuple):
    """One deferred run to enqueue."""

    id: str
    name: str
    task_name: str
    call: bytes
    parameters: str
    tags: str
    map_index: int
    flow_run_id: str | None
    waits_on: tuple[str, ...]


class Claimed(NamedTuple):
    """A run a worker claimed: ``claims`` counts this claim (2 and up: an earlier worker was lost)."""

    id: str
    name: str
    task_name: str
    call: bytes
    tags: str
    map_index: int
    claims: int


class Finished(NamedTuple):
    """The final state of a run, as the worker writes it."""

    id: str
    state_type: str
    state_name: str
    message: str | None
    at: float
    run_count: int
    start_time: float | None
    result_location: str | None
    error: bytes | None
    result: bytes | None = None  # a small result's record, kept in the row


def enqueue(conn: sqlite3.Connection, runs: Sequence[QueuedRun]) -> None:
    """Record ``runs`` as Pending, in one transaction."""
    now = time.time()
    rows = [
        (r.id, r.name, r.task_name, now, r.call, r.parameters, r.tags, len(r.waits_on), r.map_index, r.flow_run_id, now)
        for r in runs
    ]
    waits = [(r.id, upstream) for r in runs for upstream in r.waits_on]

    def body(c: sqlite3.Connection) -> None:
        c.executemany(
            "INSERT INTO deferred_runs (id, name, task_name, state_type, state_name, state_time, call, parameters, tags, "
            "waits, map_index, flow_run_id, created) VALUES (?, ?, ?, 'PENDING', 'Pending', ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if waits:
            c.executemany("INSERT INTO deferred_waits (run_id, upstream_id) VALUES (?, ?)", waits)

    write(conn, body)


def claim(
    conn: sqlite3.Connection, retries: dict[str, int], limit: int, worker: str, pid: int, *, also: Iterable[Finished] = ()
) -> list[Claimed]:
    """Claim up to ``limit`` of the oldest ready runs of the tasks named in ``retries``.

    A run is ready when it is Pending and every run it waits for is final.
    ``retries`` maps each served task name to its ``retries`` option, kept
    with the run so whoever finds it lost knows whether to run it again.
    ``also`` are results of this worker to write in the same transaction.
    """
    finished = list(also)
    if limit < 1 and not finished:
        return []
    names = list(retries)
    now = time.time()
    case = " ".join("WHEN ? THEN ?" for _ in names)
    case_args = [x for name in names for x in (name, retries[name])]
    marks = ",".join("?" * len(names))
    sql = (
        f"UPDATE deferred_runs SET state_type = 'RUNNING', state_name = 'Running', state_message = NULL, state_time = ?, "
        f"worker = ?, pid = ?, host = ?, lease_until = ?, claims = claims + 1, start_time = COALESCE(start_time, ?), "
        f"retries = CASE task_name {case} ELSE retries END "
        f"WHERE id IN (SELECT r.id FROM deferred_runs r WHERE r.state_type = 'PENDING' AND r.task_name IN ({marks}) "
        f"AND (r.waits = 0 OR NOT EXISTS (SELECT 1 FROM deferred_waits w JOIN deferred_runs u ON u.id = w.upstream_id "
        f"WHERE w.run_id = r.id AND u.state_type NOT IN {_FINAL_SQL})) ORDER BY r.created, r.rowid LIMIT ?) "
        f"RETURNING id, name, task_name, call, tags, map_index, claims"
    )
    args = [now, worker, pid, HOST, now + LEASE_S, now, *case_args, *names, limit]

    def body(c: sqlite3.Connection) -> list[Claimed]:
        if finished:
            _finish_in(c, finished, worker)
        if limit < 1:
            return []
        return [Claimed(*row) for row in c.execute(sql, args).fetchall()]

    return write(conn, body)


def _finish_in(c: sqlite3.Connection, results: Sequence[Finished], worker: str) -> None:
    c.executemany(
        "UPDATE deferred_runs SET state_type = ?, state_name = ?, state_message = ?, state_time = ?, end_time = ?, "
        "run_count = ?, start_time = COALESCE(?, start_time), result_location = ?, error = ?, result = ?, lease_until = NULL "
        "WHERE id = ? AND worker = ? AND state_type = 'RUNNING'",
        [
            (f.state_type, f.state_name, f.message, f.at, f.at, f.run_count, f.start_time, f.result_location, f.error, f.result,
             f.id, worker)
            for f in results
        ],  # fmt: skip
    )


def finish(conn: sqlite3.Connection, results: Sequence[Finished], worker: str) -> None:
    """Write final states of runs ``worker`` holds; a run it lost meanwhile is left to its new owner."""
    if results:
        write(conn, lambda c: _finish_in(c, results, worker))


def renew(conn: sqlite3.Connection, worker: str) -> None:
    """Push the lease of every run ``worker`` holds ``LEASE_S`` into the future."""
    now = time.time()
    write(
        conn,
        lambda c: c.execute(
            "UPDATE deferred_runs SET lease_until = ? WHERE worker = ? AND state_type = 'RUNNING'", (now + LEASE_S, worker)
        ),
    )


def hand_back(conn: sqlite3.Connection, ids: Sequence[str], worker: str) -> int:
    """Give runs ``worker`` holds back to the queue, as if never claimed; returns how many."""
    if not ids:
        return 0
    now = time.time()

    def body(c: sqlite3.Connection) -> int:
        return c.executemany(
            "UPDATE deferred_runs SET state_type = 'PENDING', state_name = 'Pending', state_message = ?, state_time = ?, "
            "claims = claims - 1, worker = NULL, pid = NULL, host = NULL, lease_until = NULL "
            "WHERE id = ? AND worker = ? AND state_type = 'RUNNING'",
            [("handed back by a stopping worker", now, run_id, worker) for run_id in ids],
        ).rowcount

    return write(conn, body)


def recover_lost(conn: sqlite3.Connection) -> int:
    """Runs whose worker is gone: Pending again while their retries allow, else Crashed; returns how many.

    Gone means: a worker process on this machine that no longer exists, or
    a lease that lapsed (a worker elsewhere that stopped renewing).
    """
    now = time.time()
    rows = conn.execute(
        "SELECT id, worker, pid, host, lease_until, claims, retries FROM deferred_runs WHERE state_type = 'RUNNING'"
    ).fetchall()
    lost: list[tuple[Any, ...]] = []
    for run_id, worker, pid, host, lease_until, claims, retries in rows:
        dead = host == HOST and pid is not None and not pid_alive(int(pid))
        if dead or (lease_until is not None and lease_until < now):
            why = f"its worker (pid {pid} on {host}) " + ("is gone" if dead else f"did not renew its lease for {LEASE_S:.0f} s")
            lost.append((run_id, worker, claims, retries, why))
    if not lost:
        return 0

    def body(c: sqlite3.Connection) -> int:
        changed = 0
        for run_id, worker, claims, retries, why in lost:
            if claims <= retries:
                changed += c.execute(
                    "UPDATE deferred_runs SET state_type = 'PENDING', state_name = 'Pending', state_message = ?, "
                    "state_time = ?, worker = NULL, pid = NULL, host = NULL, lease_until = NULL "
                    "WHERE id = ? AND worker = ? AND state_type = 'RUNNING'",
                    (f"{why}; to run again (attempt {claims + 1} of {retries + 1})", now, run_id, worker),
                ).rowcount
            else:
                changed += c.execute(
                    "UPDATE deferred_runs SET state_type = 'CRASHED', state_name = 'Crashed', state_message = ?, "
                    "state_time = ?, end_time = ?, run_count = ?, lease_until = NULL "
                    "WHERE id = ? AND worker = ? AND state_type = 'RUNNING'",
                    (f"{why}; no retries left", now, now, claims, run_id, worker),
                ).rowcount
        return changed

    return write(conn, body)


_READ_COLUMNS = (
    "id, name, task_name, state_type, state_name, state_message, state_time, run_count, start_time, result_location, error, result"
)


def read_rows(conn: sqlite3.Connection, ids: Sequence[str], *, final_only: bool = False) -> list[tuple[Any, ...]]:
    """The state columns of runs ``ids`` (``_READ_COLUMNS``), in chunks of 500 ids."""
    out: list[tuple[Any, ...]] = []
    extra = f" AND state_type IN {_FINAL_SQL}" if final_only else ""
    for start in range(0, len(ids), 500):
        part = list(ids[start : start + 500])
        marks = ",".join("?" * len(part))
        out.extend(conn.execute(f"SELECT {_READ_COLUMNS} FROM deferred_runs WHERE id IN ({marks}){extra}", part).fetchall())
    return out
