"""Opening the database, writing to it from many processes, and telling live processes from dead ones."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from taskyard.store.schema import migrate

__all__ = ("database_path", "connect", "write", "HOST")

T = TypeVar("T")
HOST = socket.gethostname()
# SQLite waits this long for another writer's lock before reporting "locked";
# write() retries on top of it, so many flow processes never see the error.
_BUSY_TIMEOUT_MS = 30_000
_RETRY_FOR_S = 120.0


def database_path(home: Path | str) -> Path:
    """Where the run store of ``home`` (a TASKYARD_HOME) lives."""
    return Path(home) / "runs.db"


def connect(home: Path | str) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the run store under ``home``.

    The connection is in autocommit mode (transactions are explicit), WAL
    journal mode, and usable from any thread by one thread at a time.
    """
    path = database_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        _retrying(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        # In WAL mode NORMAL never corrupts the database; it only skips an
        # fsync per commit (a power cut may lose the last commits).
        conn.execute("PRAGMA synchronous = NORMAL")
        _retrying(lambda: migrate(conn))
    except BaseException:
        conn.close()
        raise
    return conn


def write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` in one write transaction, retrying while another process holds the lock."""

    def attempt() -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    return _retrying(attempt)


def _retrying(fn: Callable[[], T]) -> T:
    deadline = time.monotonic() + _RETRY_FOR_S
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)

