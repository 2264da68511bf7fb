"""The log records recorded for a flow run.

Records of taskyard's loggers (``get_run_logger()`` and the engine's own)
made for a recorded flow run are stored with it — from the flow process,
and from task runs elsewhere whose records the runner brings back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from taskyard.runs.reading import FINAL_TYPES, flow_run_row, open_store

__all__ = ("LogEntry", "read_logs")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One recorded log record."""

    seq: int
    timestamp: datetime
    level: int
    logger: str
    message: str
    task_run_id: str | None


def read_logs(run_id: str, after: int = 0) -> tuple[list[LogEntry], bool]:
    """The records of a flow run after sequence number ``after``, and whether the run is final.

    Raises:
        RunNotFound: No such flow run.
    """
    conn = open_store()
    try:
        row = flow_run_row(conn, run_id)
        entries = [
            LogEntry(seq, datetime.fromtimestamp(at, UTC), level, name, message, task_run)
            for seq, at, level, name, message, task_run in conn.execute(
                "SELECT rowid, timestamp, level, logger, message, task_run_id FROM logs "
                "WHERE flow_run_id = ? AND rowid > ? ORDER BY rowid",
                (row["id"], after),
            )
        ]
        return entries, row["state_type"] in FINAL_TYPES
    finally:
        conn.close()
