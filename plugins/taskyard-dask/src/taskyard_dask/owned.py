"""The workers of a cluster the runner started: quiet to stop, deaf to the terminal's signals.

The runner registers :class:`OwnedWorkers` on a cluster it starts and closes
(never on one given by ``address``). It runs in every worker process,
including those a nanny starts again later. :func:`muted` silences the
flow process's side (the scheduler) while the runner kills those workers.
:func:`deaf_children` makes a worker process deaf to the terminal's signals
from its start, before the plugin is set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from taskyard.runners.base import block_group_signals, ignore_group_signals

__all__ = ("OwnedWorkers", "muted", "deaf_children", "kill_worker_processes")

_CLOSING = ("closing", "closed", "closing_gracefully", "failed")


class OwnedWorkers(WorkerPlugin):
    """Worker plugin for the workers of a runner-started cluster.

    * **Group signals**: a Ctrl-C or SIGTERM sent to the terminal's whole
      process group reaches the worker processes too, which would die at
      once, each with its own errors. The workers ignore both: the flow
      process decides what happens to their runs, then closes the cluster.
    * **A quiet close**: ``Worker.close`` stops the heartbeat's periodic
      callback but not a heartbeat already waiting for the scheduler's
      answer, then closes the connections it uses; it fails, and the worker
      logs ``Failed to communicate with scheduler during heartbeat`` with a
      traceback — at the end of about every other flow run. Plugins are torn
      down early in ``Worker.close``, while the connections are open, so the
      teardown stops the heartbeat and waits (at most ``wait`` seconds) for
      the one in flight.
    """

    def __init__(self, wait: float = 2.0, flow_pid: int | None = None) -> None:
        self.wait = wait
        self.flow_pid = flow_pid if flow_pid is not None else os.getpid()
        self._callback: Any = None
        self._beat: Callable[[], Awaitable[None]] | None = None
        self._idle: asyncio.Event | None = None

    def setup(self, worker: Any) -> None:
        own_process = os.getpid() != self.flow_pid  # not a worker in the flow's process (processes=False)
        if own_process and threading.current_thread() is threading.main_thread():
            ignore_group_signals()  # blocked since the spawn (deaf_children); ignored now
        callback = getattr(worker, "periodic_callbacks", {}).get("heartbeat")
        if callback is None:
            return
        beat = callback.callback
        idle = asyncio.Event()
        idle.set()

        async def tracked() -> None:
            idle.clear()
            try:
                await beat()
            finally:
                idle.set()

        callback.callback = tracked
        self._callback, self._beat, self._idle = callback, beat, idle

    async def teardown(self, worker: Any) -> None:
        callback, idle = self._callback, self._idle
        if callback is None or idle is None:
            return
        if str(getattr(worker.status, "name", worker.status)) in _CLOSING:
            callback.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), self.wait)
        callback.callback = self._beat


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Silence ``distributed``'s loggers in this process for the duration.

    For the runner's stop of its own cluster after a cancellation: it kills
    the worker processes, and the scheduler then reports every connection to
    them as broken (e.g. ``Batched Comm Closed`` with a traceback) — news to
    nobody, since the runner did it. The user has already been told the run
    was cancelled.
    """
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def deaf_children() -> None:
    """Block SIGINT and SIGTERM in this helper thread, and so in the threads and processes it starts.

    A worker process that the group's Ctrl-C reaches while it is still
    importing dies with a traceback of its own, before :class:`OwnedWorkers`
    can make it ignore the signal. The nannies spawn their worker processes
    from threads the cluster's start creates; a thread inherits its creator's
    signal mask, and a process keeps it across fork and exec, so a worker
    process spawned after this call starts with both signals blocked (and
    the threads stay blocked: see below). Never in the main thread: that is where the flow process takes Ctrl-C. A no-op
    where the platform has no thread signal masks.
    """
    if threading.current_thread() is not threading.main_thread():
        block_group_signals()  # for the thread's whole life: it only builds the cluster


def kill_worker_processes(cluster: Any) -> None:
    """Kill the worker processes of a cluster's nannies; quietly skip what is not there.

    Each nanny is first marked as closing gracefully (what ``Nanny.close_gracefully``
    does), so it closes when its worker dies instead of starting another.
    """
    from distributed.core import Status

    for nanny in list(getattr(cluster, "workers", {}).values()):
        with contextlib.suppress(Exception):
            pid = nanny.process.process.pid  # Nanny → WorkerProcess → AsyncProcess
            if pid and nanny.status == Status.running:
                nanny.status = Status.closing_gracefully
                os.kill(pid, signal.SIGKILL)
