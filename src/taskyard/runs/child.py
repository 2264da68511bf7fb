"""The process ``start_flow_run`` starts: ``python -m taskyard.runs.child RUN_ID``.

It waits for the run's scheduled start (a cancel meanwhile ends it), claims
the run — Scheduled/Pending → Running, in one transaction, so a run cancelled
at that moment never starts — and runs the flow under the recorded id. The
recorder's watcher cancels it when ``cancel_flow_run`` asks; should the flow
body be busy in its own code and not notice, the run is interrupted like a
Ctrl-C after a grace period.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
import threading
import time
from typing import Any

__all__ = ("main",)

_GRACE_S = 10.0


def main(argv: list[str]) -> int:
    """Run the flow run ``argv[0]``; exit code 0 if it completed, 1 otherwise."""
    import cloudpickle

    from taskyard.context import tags
    from taskyard.flowrecord import preset_run
    from taskyard.flows import task_runner_override
    from taskyard.loading import load_flow
    from taskyard.runs.reading import open_store
    from taskyard.store.db import HOST, write

    run_id = argv[0]
    conn = open_store()
    row = conn.execute(
        "SELECT f.name, f.scheduled_start, l.flow_ref, l.parameters, l.task_runner FROM flow_runs f "
        "JOIN launches l ON l.flow_run_id = f.id WHERE f.id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        print(f"no launch recorded for flow run {run_id}", file=sys.stderr)
        return 2
    name, start_at, ref, blob, runner = row
    if start_at is not None and not _wait_until(conn, run_id, float(start_at)):
        return 1  # cancelled while scheduled
    now = time.time()
    claimed = write(
        conn,
        lambda c: c.execute(
            "UPDATE flow_runs SET state_type = 'RUNNING', state_name = 'Running', state_time = ?, pid = ?, host = ?, "
            "heartbeat = ? WHERE id = ? AND state_type IN ('SCHEDULED', 'PENDING') AND cancel_requested = 0",
            (now, _pid(), HOST, now, run_id),
        ).rowcount,
    )
    conn.close()
    if not claimed:
        return 1  # cancelled (or started elsewhere) before it could start
    launch = cloudpickle.loads(blob)
    if launch["flow"] is not None:
        packed = cloudpickle.loads(launch["flow"])
        flow = packed["flow"]
        if packed["runner"] is not None:
            cls, args, kwargs = packed["runner"]
            flow = flow.with_options(task_runner=cls(*args, **kwargs))
    else:
        flow = load_flow(ref)
    threading.Thread(target=_backstop, args=(run_id,), name="taskyard-cancel-backstop", daemon=True).start()
    override = task_runner_override(runner) if runner else contextlib.nullcontext()
    preset_run.set((run_id, name))
    with tags(*launch["tags"]), override:
        try:
            state = flow(**launch["parameters"], return_state=True)
        except KeyboardInterrupt:
            return 1  # cancelled while busy in its own code; recorded Cancelled
    return 0 if state.is_completed() else 1


def _pid() -> int:
    import os

    return os.getpid()


def _wait_until(conn: Any, run_id: str, start_at: float) -> bool:
    """Sleep until ``start_at``, keeping a heartbeat; False if the run was cancelled meanwhile."""
    from taskyard.store.db import write

    while True:
        row = conn.execute("SELECT state_type, cancel_requested FROM flow_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row[0] != "SCHEDULED" or row[1]:
            return False
        left = start_at - time.time()
        if left <= 0:
            return True
        write(conn, lambda c: c.execute("UPDATE flow_runs SET heartbeat = ? WHERE id = ?", (time.time(), run_id)))
        time.sleep(min(left, 1.0))


def _backstop(run_id: str) -> None:
    """Interrupt the flow like Ctrl-C if a requested cancel has not ended it after a grace period."""
    from taskyard.runs.reading import open_store

    asked_at = None
    while True:
        time.sleep(1.0)
        try:
            conn = open_store()
            try:
                row = conn.execute("SELECT cancel_requested, state_type FROM flow_runs WHERE id = ?", (run_id,)).fetchone()
            finally:
                conn.close()
        except Exception:
            continue
        if row is None or row[1] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return
        if row[0] and asked_at is None:
            asked_at = time.monotonic()
        if asked_at is not None and time.monotonic() - asked_at > _GRACE_S:
            _thread.interrupt_main()
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
