"""The flow server: starts runs of its deployments on schedule, and those started by name.

::

    FlowServer.run()  (one loop, in the thread that calls it; a tick ≤ 0.2 s)
      ├─ each schedule slot that is due: a Pending run of the deployment is
      │    recorded (idempotency key "deployment:<name>:<slot>", so two servers
      │    of one deployment record a slot once); a slot that comes while
      │    `limit` runs are in flight or waiting is skipped and logged
      ├─ Pending runs of its deployments (its own, and start_flow_run's) are
      │    claimed (Pending → Running in one UPDATE, like a start_flow_run
      │    process) while fewer than `limit` are in flight, and each runs in
      │    a thread of this process under its recorded id
      ├─ every 5 s: the deployments' heartbeat
      └─ stop(): starts nothing more and waits for the runs in flight;
         stop(hurry=True) cancels them (they end Cancelled)

Schedules are computed from *now* when the server starts: slots missed
while nothing served are not replayed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskyard import cancelling
from taskyard.background.deployments import Deployment
from taskyard.context import tags
from taskyard.deferred.future import deferred_home
from taskyard.flowrecord import flow_source, preset_run
from taskyard.runs.deployed import insert_deployment_run
from taskyard.runs.reading import open_store
from taskyard.store.codec import dumps_json
from taskyard.store.db import HOST, write

__all__ = ("FlowServer",)

logger = logging.getLogger("taskyard.serve")
_TICK_S = 0.2
_HEARTBEAT_S = 5.0
_HURRY_WAIT_S = 30.0


class FlowServer:
    """Serves ``deployments`` from :meth:`run` until :meth:`stop`.

    Args:
        deployments: What to serve (``Flow.to_deployment(...)``).
        limit: At most this many runs in flight at once (None: no limit).
        home: The TASKYARD_HOME whose store records the runs (default: the environment's).

    Raises:
        TypeError: Something in ``deployments`` is not a Deployment.
        ValueError: Nothing to serve, two with one name, or a bad ``limit``.
    """

    def __init__(self, deployments: Sequence[Deployment], limit: int | None = None, home: Path | str | None = None) -> None:
        if not deployments:
            raise ValueError("serve() needs at least one deployment (made with flow.to_deployment(...))")
        by_name: dict[str, Deployment] = {}
        for d in deployments:
            if not isinstance(d, Deployment):
                raise TypeError(f"serve() takes deployments made with flow.to_deployment(...), not {d!r}")
            if d.full_name in by_name:
                raise ValueError(f"two deployments are named {d.full_name!r}; give them different names")
            by_name[d.full_name] = d
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"limit must be a whole number of runs, 1 or more, or None, not {limit!r}")
        self.deployments = by_name
        self.limit = limit
        self.home = Path(home) if home is not None else deferred_home()
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._wake = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self.started_runs = 0
        self.skipped_slots = 0

    def stop(self, *, hurry: bool = False) -> None:
        """Start nothing more; :meth:`run` returns once the runs in flight end (``hurry``: cancelled)."""
        self._stopping.set()
        if hurry:
            self._hurry.set()
        self._wake.set()

    def run(self) -> None:
        """Serve until :meth:`stop` is called."""
        from taskyard.console import configure_console
        from taskyard.settings import current_settings

        configure_console(current_settings())
        conn = open_store(self.home)
        try:
            self._register(conn)
            for d in self.deployments.values():
                shown = ", ".join(s.describe() for s in d.schedules) or "no schedule"
                logger.info("Serving deployment %r (%s%s)", d.full_name, shown, ", paused" if d.paused else "")
            try:
                self._loop(conn)
            finally:
                self._finish_in_flight()
                self._unregister(conn)
        finally:
            conn.close()
        logger.info("Flow server stopped after starting %d runs", self.started_runs)

    def _loop(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        due = {name: [s.next_after(now) for s in d.schedules] for name, d in self.deployments.items()}
        last_beat = time.monotonic()
        while not self._stopping.is_set():
            self._reap()
            now = time.time()
            for name, slots in due.items():
                for i, slot in enumerate(slots):
                    if slot <= now:
                        slots[i] = self.deployments[name].schedules[i].next_after(now)
                        self._schedule(conn, self.deployments[name], slot)
            self._claim(conn)
            if time.monotonic() - last_beat > _HEARTBEAT_S:
                last_beat = time.monotonic()
                self._beat(conn)
            soonest = min((t for slots in due.values() for t in slots), default=now + _TICK_S)
            self._wake.wait(max(0.0, min(_TICK_S, soonest - time.time())))
            self._wake.clear()

    def _schedule(self, conn: sqlite3.Connection, d: Deployment, slot: float) -> None:
        if d.paused:
            return
        if self.limit is not None and len(self._running) + self._waiting(conn) >= self.limit:
            self.skipped_slots += 1
            logger.info("Deployment %r: the run due at %s is skipped: %d runs in flight (limit %d)",
                        d.full_name, time.strftime("%H:%M:%S", time.localtime(slot)), len(self._running), self.limit)  # fmt: skip
            return
        # Recorded with the slot it stands for as its scheduled start (it starts at most a tick late).
        insert_deployment_run(
            conn, d.full_name, d.flow.name, dict(d.parameters), list(d.tags),
            idempotency_key=f"deployment:{d.full_name}:{slot:.3f}", scheduled_start=slot, why="scheduled",
        )  # fmt: skip

    def _waiting(self, conn: sqlite3.Connection) -> int:
        names = list(self.deployments)
        marks = ",".join("?" * len(names))
        row = conn.execute(
            f"SELECT count(*) FROM flow_runs WHERE deployment IN ({marks}) AND state_type = 'PENDING'", names
        ).fetchone()
        return int(row[0])

    def _claim(self, conn: sqlite3.Connection) -> None:
        room = (self.limit - len(self._running)) if self.limit is not None else 100
        if room <= 0:
            return
        names = list(self.deployments)
        marks = ",".join("?" * len(names))
        now = time.time()
        rows = conn.execute(
            f"SELECT f.id, f.name, f.deployment, l.parameters, l.task_runner FROM flow_runs f JOIN launches l "
            f"ON l.flow_run_id = f.id WHERE f.deployment IN ({marks}) AND (f.state_type = 'PENDING' OR "
            f"(f.state_type = 'SCHEDULED' AND f.scheduled_start <= ?)) AND f.cancel_requested = 0 "
            f"ORDER BY f.created, f.rowid LIMIT ?",
            (*names, now, room),
        ).fetchall()
        for run_id, name, deployment, launch, runner in rows:
            if _claim_one(conn, run_id, now):
                self._start(run_id, name, self.deployments[deployment], launch, runner)

    def _start(self, run_id: str, name: str, d: Deployment, launch: bytes, runner: str | None) -> None:
        import cloudpickle

        spec = cloudpickle.loads(launch)
        thread = threading.Thread(
            target=self._run_one, args=(run_id, name, d, spec["parameters"], spec["tags"], runner),
            name=f"taskyard-serve-{name}", daemon=True,
        )  # fmt: skip
        self._running[run_id] = thread
        self.started_runs += 1
        thread.start()

    def _run_one(self, run_id: str, name: str, d: Deployment, params: dict[str, Any], run_tags: list[str], runner: str | None) -> None:
        from taskyard.flows import task_runner_override

        preset_run.set((run_id, name))
        override = task_runner_override(runner) if runner else contextlib.nullcontext()
        try:
            with tags(*run_tags), override:
                d.flow(**params, return_state=True)
        except BaseException as exc:  # a bad parameter: the run never started
            _fail_unstarted(self.home, run_id, exc)
        finally:
            self._wake.set()

    def _reap(self) -> None:
        for run_id, thread in list(self._running.items()):
            if not thread.is_alive():
                del self._running[run_id]

    def _finish_in_flight(self) -> None:
        while self._running:
            if self._hurry.is_set():
                for run_id in list(self._running):
                    cancelling.cancel_here(run_id, "the flow server was stopped")
                deadline = time.monotonic() + _HURRY_WAIT_S
                for thread in list(self._running.values()):
                    thread.join(max(0.0, deadline - time.monotonic()))
                return
            self._wake.wait(_TICK_S)
            self._wake.clear()
            self._reap()

    def _register(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        rows = [
            (name, d.flow.name, flow_source(d.flow), dumps_json(d.parameters), dumps_json([s.describe() for s in d.schedules]),
             int(d.paused), dumps_json(d.tags), now, os.getpid(), HOST, now)
            for name, d in self.deployments.items()
        ]  # fmt: skip
        write(conn, lambda c: c.executemany(
            "INSERT OR REPLACE INTO deployments (name, flow_name, flow_ref, parameters, schedules, paused, tags, updated, "
            "pid, host, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        ))  # fmt: skip

    def _beat(self, conn: sqlite3.Connection) -> None:
        names = list(self.deployments)
        marks = ",".join("?" * len(names))
        write(conn, lambda c: c.execute(
            f"UPDATE deployments SET heartbeat = ? WHERE pid = ? AND host = ? AND name IN ({marks})",
            (time.time(), os.getpid(), HOST, *names),
        ))  # fmt: skip

    def _unregister(self, conn: sqlite3.Connection) -> None:
        names = list(self.deployments)
        marks = ",".join("?" * len(names))
        write(conn, lambda c: c.execute(
            f"UPDATE deployments SET pid = NULL, heartbeat = NULL WHERE pid = ? AND host = ? AND name IN ({marks})",
            (os.getpid(), HOST, *names),
        ))  # fmt: skip


def _claim_one(conn: sqlite3.Connection, run_id: str, now: float) -> bool:
    """Pending (or due Scheduled) → Running for this process, unless another claimed or cancelled it first."""

    def body(c: sqlite3.Connection) -> int:
        return c.execute(
            "UPDATE flow_runs SET state_type = 'RUNNING', state_name = 'Running', state_time = ?, pid = ?, host = ?, "
            "heartbeat = ? WHERE id = ? AND state_type IN ('SCHEDULED', 'PENDING') AND cancel_requested = 0",
            (now, os.getpid(), HOST, now, run_id),
        ).rowcount

    return bool(write(conn, body))


def _fail_unstarted(home: Path, run_id: str, exc: BaseException) -> None:
    """A claimed run whose flow call raised before the run began (bad parameters): record it Failed."""
    message = f"the run could not start: {type(exc).__name__}: {exc}"
    now = time.time()
    conn = open_store(home)
    try:
        def body(c: sqlite3.Connection) -> None:
            changed = c.execute(
                "UPDATE flow_runs SET state_type = 'FAILED', state_name = 'Failed', state_message = ?, state_time = ?, "
                "end_time = ? WHERE id = ? AND state_type = 'RUNNING'",
                (message, now, now, run_id),
            ).rowcount
            if changed:
                c.execute(
                    "INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) VALUES (?, 'FAILED', 'Failed', ?, ?)",
                    (run_id, message, now),
                )

        write(conn, body)
    finally:
        conn.close()
    logger.error("Flow run %s could not start: %s", run_id, message)
