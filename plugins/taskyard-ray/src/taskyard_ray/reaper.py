"""The reaper: a local Ray's processes end with the flow process that started them.

::

    flow process ── start_local_ray ── ray.init starts GCS, raylet, agents ... (its new children)
         │ holds the write end of a pipe (the lifeline)
         ▼
    reaper process (own session: a Ctrl-C to the terminal's group does not reach it)
         every 0.5 s: notes those processes and all their descendants (workers come and go)
         lifeline closed — the flow process released Ray, or died (SIGKILL included) —
         → SIGKILL to every noted process still alive (the same process: pid and start time)

Ray ties its GCS and raylet to the driver (a parent-death signal), but its
agents outlive their raylet while they try to report to a GCS that is gone,
and a driver killed with SIGKILL runs no clean-up. Linux only (it reads
``/proc``); elsewhere :func:`start_reaper` starts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ("start_reaper", "children_of", "with_descendants", "Reaper")

_POLL_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def _all_stats() -> dict[int, tuple[int, int]]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                stats[int(name)] = found
    return stats


def children_of(pid: int) -> set[int]:
    """The pids of ``pid``'s direct children now (empty where there is no ``/proc``)."""
    if not os.path.isdir("/proc"):
        return set()
    return {child for child, (parent, _) in _all_stats().items() if parent == pid}


def with_descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process descended from them now."""
    if not pids or not os.path.isdir("/proc"):
        return set(pids)
    stats = _all_stats()
    found, grew = set(pids), True
    while grew:
        more = {pid for pid, (parent, _) in stats.items() if parent in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


class Reaper:
    """The flow side: the reaper process and the lifeline that keeps it waiting."""

    def __init__(self, process: subprocess.Popen[bytes], write_fd: int) -> None:
        self.process = process
        self._write_fd: int | None = write_fd

    def release(self) -> None:
        """Ray was shut down: let the reaper end what is left of it, and exit."""
        fd, self._write_fd = self._write_fd, None
        if fd is not None:
            os.close(fd)


def start_reaper(roots: set[int]) -> Reaper | None:
    """Watch ``roots`` (the processes Ray just started) and their descendants; None off Linux or without roots."""
    if not roots or not sys.platform.startswith("linux"):
        return None
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            # The file runs as a script (-I: no site, no PYTHON* variables, no script folder on the path):
            # it needs only the standard library, and importing the package would be slower and noisier.
            [sys.executable, "-I", os.path.abspath(__file__), str(read_fd), *map(str, sorted(roots))],
            pass_fds=(read_fd,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return Reaper(process, write_fd)


# -- the reaper process ---------------------------------------------------------------------


def _reap(lifeline: int, roots: set[int]) -> None:
    closed = threading.Event()

    def wait_for_eof() -> None:
        try:
            while os.read(lifeline, 1):
                pass
        except OSError:
            pass
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    noted: dict[int, int] = {}  # pid -> start time
    for pid in roots:
        found = _stat(pid)
        if found is not None:
            noted[pid] = found[1]
    while True:
        stats = _all_stats()
        for pid, (parent, started) in stats.items():  # descendants of what was noted
            if parent in noted and pid not in noted and stats.get(parent, (0, -1))[1] == noted[parent]:
                noted[pid] = started
        if closed.wait(_POLL_S):
            break
    time.sleep(0.2)  # a normal ray.shutdown() may still be ending its processes itself
    for pid, started in noted.items():
        found = _stat(pid)
        if found is not None and found[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the lifeline ends the reaper
    _reap(int(sys.argv[1]), {int(p) for p in sys.argv[2:]})
