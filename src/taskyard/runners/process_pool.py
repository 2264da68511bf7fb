"""The process runner's calls and workers as the flow process holds them, and starting and stopping a worker.

Every call the runner takes is an :class:`Entry`: its future and what its
lost attempts taught. Queued calls of one task wait in a :class:`Segment`;
a batch sent to a worker is a :class:`Sent` (a lane's range is a
:class:`~taskyard.runners.process_lanes.LaneSent`). A :class:`Worker` is the
handle on one worker process: its pipes, its state pages and the batches it
holds, oldest first, so the runner always knows which calls a worker holds
and which one it is running.
"""

from __future__ import annotations

import contextlib
import multiprocessing.forkserver
import selectors
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskyard.runners.base import BatchSizer, TaskCall, TaskFuture, launching_without_main
from taskyard.runners.group_signals import deaf_start
from taskyard.runners.process_lanes import LaneHeaders, LaneSent
from taskyard.runners.process_worker import STOP, FrameBuffer, worker_main, write_frame
from taskyard.runners.state_pages import StatePages

if TYPE_CHECKING:
    from taskyard.runners.processes import ProcessPoolTaskRunner

__all__ = ("Entry", "Sent", "Segment", "Worker", "start_worker", "stop_workers", "close_pipes")


class Entry:
    """One call in the runner's hands, with what its lost attempts taught."""

    __slots__ = ("call", "future", "losses", "orphaned")

    def __init__(self, call: TaskCall[Any], future: TaskFuture[Any]) -> None:
        self.call, self.future = call, future
        self.losses = 0  # attempts lost with the worker running it
        self.orphaned = 0  # workers that died holding it before it started, while running nothing


class Sent(list[Entry]):
    """The calls of one batch a worker holds (those still without a state), and its timing."""

    __slots__ = ("sizer", "size", "started")

    def __init__(self, entries: list[Entry], sizer: BatchSizer | None) -> None:
        super().__init__(entries)
        self.sizer, self.size = sizer, len(entries)
        self.started: float | None = None  # when the worker began it (its previous batch ended)


class Segment:
    """Queued calls of one task: cut into batches by ``sizer``, or sent as one batch (None)."""

    __slots__ = ("entries", "sizer")

    def __init__(self, entries: Sequence[Entry], sizer: BatchSizer | None) -> None:
        self.entries, self.sizer = deque(entries), sizer


class Worker:
    """The flow process's handle on one worker process."""

    __slots__ = ("process", "inbox", "outbox", "pages", "frames", "batches", "done", "lanes")

    def __init__(self, process: Any, inbox: Any, outbox: Any, pages: StatePages) -> None:
        self.process, self.inbox, self.outbox, self.pages = process, inbox, outbox, pages
        self.frames = FrameBuffer()
        self.batches: deque[Sent | LaneSent] = deque()  # sent, oldest first; the head one is being run
        self.done = 0  # states received; pages.started counts calls started
        self.lanes = LaneHeaders()  # the lanes whose headers it holds

    def running(self) -> bool:
        """True if the worker has started a call it has not answered."""
        return bool(self.batches) and self.pages.started > self.done


def start_worker(runner: ProcessPoolTaskRunner) -> Worker:
    ctx = runner._ctx
    inbox_r, inbox_w = ctx.Pipe(duplex=False)
    outbox_r, outbox_w = ctx.Pipe(duplex=False)
    pages = StatePages(ctx)
    # A forked child gets a copy of every descriptor: it must close the
    # flow process's ends of the pipes, or it would never see them close.
    inherited = [inbox_w.fileno(), outbox_r.fileno()] + [
        fd for w in runner._workers.values() for fd in (w.inbox.fileno(), w.outbox.fileno())
    ]
    process = ctx.Process(
        target=worker_main,
        args=(
            inbox_r, outbox_w, pages, runner.start_method == "forkserver",
            inherited if runner.start_method == "fork" else [], runner._init,
        ),  # fmt: skip
        name="taskyard-worker",
    )
    if runner.start_method == "forkserver":
        # Started outside deaf_start: the fork server is shared by everything in this
        # process (a LocalCluster's workers too), which must not inherit blocked signals.
        multiprocessing.forkserver.ensure_running()
    # A Ctrl-C to the process group must neither kill the starting worker nor
    # leave it started but untracked: see group_signals.
    with deaf_start():
        try:
            with launching_without_main():  # cloudpickle ships what __main__ defines
                process.start()
        finally:
            inbox_r.close()
            outbox_w.close()
        worker = Worker(process, inbox_w, outbox_r, pages)
        runner._workers[outbox_r.fileno()] = worker
        assert runner._selector is not None
        runner._selector.register(outbox_r.fileno(), selectors.EVENT_READ, worker)
    return worker


def stop_workers(workers: list[Worker], kill: bool) -> None:
    """Let idle workers exit (or kill them), and reap them."""
    for worker in workers:
        if kill:
            with contextlib.suppress(OSError):
                worker.process.kill()
        else:
            with contextlib.suppress(OSError):
                write_frame(worker.inbox.fileno(), STOP)
    for worker in workers:
        worker.process.join(10)
        if worker.process.exitcode is None:
            worker.process.kill()
            worker.process.join()
        close_pipes(worker)


def close_pipes(worker: Worker) -> None:
    for conn in (worker.inbox, worker.outbox):
        with contextlib.suppress(OSError):
            conn.close()
