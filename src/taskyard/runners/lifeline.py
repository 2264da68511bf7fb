"""Processes that end with the flow process: parent-death signals and lifelines.

A runner that starts processes must not leave them running when the flow
process dies — by Ctrl-C, SIGTERM, or SIGKILL, which runs no cleanup at
all. Two mechanisms, used together where they apply:

* **A lifeline**: a pipe whose only write end the flow process holds. When
  the flow process dies the kernel closes that end, and a thread in the
  child that waits on the read end sees end-of-file and ends the child at
  once (:func:`exit_when_closed`). Works on every POSIX system and needs no
  cooperation from the code the child is running — except that the thread
  needs the GIL, so a child stuck in C code that holds it is not stopped.
* **A parent-death signal** (Linux ``prctl(PR_SET_PDEATHSIG)``): the kernel
  sends the child a signal when its parent dies, GIL or not
  (:func:`set_parent_death_signal`). It is tied to the *thread* that
  started the child, so it only suits children whose parent is a process
  that lives as long as it (a fork server, a nanny), not a flow-process
  thread that may end first. Elsewhere it does nothing.

Plugins that start Python processes of their own call these in the child;
both are no-ops where they cannot work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

__all__ = ("set_parent_death_signal", "exit_when_closed")

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send this process ``signum`` when its parent dies.

    Returns:
        True if it was set (Linux); False where the platform has no such
        thing, and nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # The parent may have died before the call: then the signal never comes.
    if os.getppid() == 1:
        os._exit(1)
    return True


def exit_when_closed(fd: int, code: int = 1) -> threading.Thread:
    """End this process (``os._exit(code)``) once ``fd`` reads end-of-file.

    ``fd`` is the read end of a pipe whose write end only the parent holds;
    nothing is ever written to it. A daemon thread waits on it.
    """

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os._exit(code)

    thread = threading.Thread(target=watch, name="taskyard-lifeline", daemon=True)
    thread.start()
    return thread
