"""Starting a child process that a Ctrl-C to the whole process group must not reach.

A terminal sends Ctrl-C (and a job scheduler may send SIGTERM) to every
process of the group: the flow process *and* the processes its runner
started. A worker process ignores both — the flow process decides what
becomes of its runs, then stops it — but a worker that is still starting
up has not got that far: Python is importing, and the signal kills it
with a traceback of its own on the user's terminal. And if the flow
process's main thread takes its KeyboardInterrupt in the middle of
``Process.start()``, the child may be left half-started (reading its
instructions from a pipe nobody finishes writing) and tracked by nobody.

So, around the start (:func:`deaf_start`, flow-process side):

* the starting thread blocks SIGINT and SIGTERM; a thread's signal mask
  survives ``fork`` and ``exec``, so the child begins life with both
  blocked — a signal sent to it meanwhile waits, pending;
* in the main thread, a SIGINT or SIGTERM that arrives during the start is
  held back and delivered right after it, to the handler that was there.

and in the child, first thing (:func:`ignore_group_signals`): ignore both —
which discards one that is pending — then unblock them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ("GROUP_SIGNALS", "deaf_start", "block_group_signals", "ignore_group_signals")

#: The signals a terminal (Ctrl-C) or a job scheduler sends to a whole process group.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

_HAS_MASKS = hasattr(signal, "pthread_sigmask")


@contextlib.contextmanager
def deaf_start() -> Iterator[None]:
    """Around starting a child process that calls :func:`ignore_group_signals` first thing.

    The child starts with SIGINT and SIGTERM blocked, and in the main
    thread neither interrupts the start: one that arrives is delivered
    when the block ends. Where there are no thread signal masks only the
    second half applies.
    """
    held: list[int] = []
    saved: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.getsignal(s) for s in GROUP_SIGNALS}
        if all(h is not None for h in handlers.values()):  # None: set outside Python, cannot be put back

            def hold(signum: int, frame: FrameType | None) -> None:
                held.append(signum)

            saved = {s: signal.signal(s, hold) for s in GROUP_SIGNALS}
    blocked = block_group_signals()
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if blocked:  # only those this call blocked: a thread that had them blocked keeps them so
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def block_group_signals() -> frozenset[signal.Signals]:
    """Block SIGINT and SIGTERM in this thread (and so in the threads and processes it starts).

    Returns:
        The signals this call blocked (not those blocked already); empty
        where the platform has no thread signal masks.
    """
    if not _HAS_MASKS:
        return frozenset()
    # multiprocessing's resource tracker unblocks both signals in the thread that starts it:
    # started now, it is not started later inside the block.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    return GROUP_SIGNALS - signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)


def ignore_group_signals() -> None:
    """In a child started by :func:`deaf_start`: ignore SIGINT and SIGTERM, then unblock them.

    Ignoring a blocked signal discards it if it is pending, so one sent to
    the group while the child was starting is gone without a trace.
    Only in the child's main thread (where handlers can be set).
    """
    for signum in GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if _HAS_MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
