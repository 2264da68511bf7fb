"""Is a process alive? One answer for the run store, result storage and the test tools."""

from __future__ import annotations

import os

__all__ = ("pid_alive",)


def pid_alive(pid: int) -> bool:
    """True if a process with this id runs on this machine (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[-1].split()
        return not fields or fields[0] != b"Z"
    except OSError:  # no /proc (not Linux), or it just ended: the signal test said alive
        return True
