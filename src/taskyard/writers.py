"""Temporary files that name their writer, and sweeping those of dead writers.

A record is written to a temporary name and renamed into place; a writer
killed in between leaves the temporary file behind. Its name says who wrote
it — ``.<record name>~<host>~<pid>~<random>.tmp`` — so a later writer can
tell whether it is stale:

* written on this host by a process that no longer exists: removed;
* older than :data:`MAX_AGE` (another host's, whose process cannot be
  checked, or a pid since reused): removed;
* otherwise (a live writer, maybe mid-write): kept.

A directory is swept on the first write into it by a process, then at
most every :data:`SWEEP_EVERY` seconds, so writing stays cheap in a
directory of many records.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable

from taskyard.pids import pid_alive

__all__ = ("temp_name", "is_stale", "should_sweep", "sweep_local", "MAX_AGE", "SWEEP_EVERY")

MAX_AGE = 24 * 3600.0
SWEEP_EVERY = 600.0
_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"

_swept: dict[str, float] = {}
_lock = threading.Lock()


def temp_name(final_name: str) -> str:
    """A temporary file name for writing ``final_name``, naming this host and process."""
    return f".{final_name}~{_HOST}~{os.getpid()}~{os.urandom(6).hex()}{_SUFFIX}"


def _writer(name: str) -> tuple[str, int] | None:
    if not (name.startswith(".") and name.endswith(_SUFFIX)):
        return None
    parts = name[: -len(_SUFFIX)].rsplit("~", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def is_stale(name: str, mtime: float | None, now: float | None = None) -> bool:
    """True if ``name`` is a temporary record file whose writer is gone (see module doc)."""
    writer = _writer(name)
    if writer is None:
        return False
    host, pid = writer
    if host == _HOST and pid != os.getpid() and not pid_alive(pid):
        return True
    return mtime is not None and (now or time.time()) - mtime > MAX_AGE


def should_sweep(directory: str) -> bool:
    """True if ``directory`` has not been swept by this process lately (and marks it swept)."""
    now = time.monotonic()
    with _lock:
        last = _swept.get(directory)
        if last is not None and now - last < SWEEP_EVERY:
            return False
        _swept[directory] = now
        return True


def sweep_local(directory: str | os.PathLike[str]) -> list[str]:
    """Remove the stale temporary files in a local directory; returns their names."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in _candidates(entries):
            try:
                if is_stale(entry.name, entry.stat(follow_symlinks=False).st_mtime):
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except OSError:  # gone already, or not ours to remove
                continue
    return removed


def _candidates(entries: Iterable[os.DirEntry[str]]) -> Iterable[os.DirEntry[str]]:
    return (e for e in entries if e.name.startswith(".") and e.name.endswith(_SUFFIX) and "~" in e.name)
