"""The process runner's collector thread: what the workers send, read into states, and what a dead worker costs.

::

    workers' pipes ─▶ selector ─▶ a page frame ───▶ the states in page k, matched in order to
                      (this                           the calls of the batch the worker holds first
                       thread)    a lane's block ──▶ Lane.complete over the calls of its range
                                  "unloadable" ───▶ the batch placed again a call at a time;
                                                     a call alone ends Failed
                                  "init failed" ──▶ the error kept: the queued calls end Crashed
                                  end-of-file ────▶ the worker died: see below

A worker that died: the states left in its pages are read first, so no
finished call is lost. The call it had started (the shared counter says
whether it had) is lost: placed again while its retries allow, then
Crashed. The calls queued on it are placed again, one by one if it died
between calls (loading one of them may be what killed it); a call that
``_MAX_ORPHANED`` workers died holding before it started ends Crashed.
Once the runner is closing and every call is answered, the thread stops the
workers and ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskyard.exceptions import RunError, UnpicklableArgumentError
from taskyard.gcpause import collector_paused
from taskyard.runners.base import Cancelled, Crashed, State
from taskyard.runners.process_lanes import BLOCK, LaneSent, as_calls, decode_block
from taskyard.runners.process_pool import Entry, Segment, Sent, Worker, close_pipes, stop_workers
from taskyard.runners.process_worker import INIT_FAILED, UNLOADABLE, decode_state
from taskyard.runners.state_pages import PAGE
from taskyard.states import Failed

if TYPE_CHECKING:
    from taskyard.runners.processes import ProcessPoolTaskRunner

__all__ = ("collect",)

_PAUSE_FROM_STATES = 64  # a frame with this many states is read with the garbage collector paused
_MAX_ORPHANED = 3  # deaths with this call queued and nothing running before it is blamed


def collect(runner: ProcessPoolTaskRunner) -> None:
    selector, wakeup = runner._selector, runner._wakeup
    assert selector is not None and wakeup is not None
    while True:
        for key, _ in selector.select():
            if key.data is None:
                os.read(wakeup[0], 4096)
            else:
                _read(runner, key.data)
        with runner._lock:
            finished = runner._closing and runner._outstanding == 0
            if finished:
                workers = list(runner._workers.values())
                runner._workers.clear()
        if finished:
            break
    stop_workers(workers, kill=runner._cancelling)
    selector.close()
    for fd in wakeup:
        os.close(fd)
    runner._shared.close()


def _read(runner: ProcessPoolTaskRunner, worker: Worker) -> None:
    try:
        data = os.read(worker.outbox.fileno(), 1 << 20)
    except OSError:
        data = b""
    if not data:
        _lost(runner, worker)
        return
    for frame in worker.frames.feed(data):
        if frame.startswith(INIT_FAILED):
            with runner._lock:
                runner._initializer_error = frame[len(INIT_FAILED) :].decode(errors="replace")
            continue
        if frame == UNLOADABLE:
            _unloadable(runner, worker)
            continue
        _states(runner, worker, worker.pages.take(frame[1]) if frame[:1] == PAGE else [frame])


def _states(runner: ProcessPoolTaskRunner, worker: Worker, payloads: list[bytes]) -> None:
    """Complete the calls whose states (or blocks of a lane) ``worker`` sent, in the order it ran them."""
    if any(payload[:1] == BLOCK for payload in payloads):
        run: list[bytes] = []
        for payload in payloads:
            if payload[:1] != BLOCK:
                run.append(payload)
                continue
            if run:
                _states(runner, worker, run)
                run = []
            _block(runner, worker, payload)
        if run:
            _states(runner, worker, run)
        return
    with collector_paused(len(payloads), at_least=_PAUSE_FROM_STATES):
        states = [_decoded(payload) for payload in payloads]
        runner._finish(_received(runner, worker, len(states)), states)


def _block(runner: ProcessPoolTaskRunner, worker: Worker, payload: bytes) -> None:
    """Complete the calls of a lane whose outcomes ``worker`` sent as one block."""
    block = decode_block(payload)
    count = len(block.results)
    with runner._lock:
        worker.done += count
        head = worker.batches[0] if worker.batches else None
        if not isinstance(head, LaneSent) or head.next != block.start:
            return  # taken by a cancellation
        head.next += count
        if count:
            head.ran += block.ends[-1] - block.starts[0]
        if not head:
            worker.batches.popleft()
            now = time.perf_counter()
            if head.ran > 0:  # the calls' own time, as the worker read it: no pipe or wait in it
                head.sizer.record(head.size, head.ran)
            elif head.started is not None:
                head.sizer.record(head.size, now - head.started)
            if worker.batches:
                worker.batches[0].started = now
            runner._dispatch()
    runner._settle()
    head.segment.lane.complete(block)
    runner._answered(count)


def _received(runner: ProcessPoolTaskRunner, worker: Worker, count: int) -> list[Entry]:
    """The entries ``count`` states just received from ``worker`` belong to, in order."""
    entries: list[Entry] = []
    with runner._lock:
        worker.done += count
        while len(entries) < count and worker.batches:  # none left: taken by a cancellation
            head = worker.batches[0]
            if not isinstance(head, Sent):  # states come only for ordinary batches
                break
            take = min(count - len(entries), len(head))
            entries.extend(head[:take])
            del head[:take]
            if not head:
                worker.batches.popleft()
                now = time.perf_counter()
                if head.sizer is not None and head.started is not None:
                    head.sizer.record(head.size, now - head.started)
                if worker.batches:
                    worker.batches[0].started = now
                runner._dispatch()
    runner._settle()
    return entries


def _unloadable(runner: ProcessPoolTaskRunner, worker: Worker) -> None:
    with runner._lock:
        if not worker.batches:  # taken by a cancellation
            return
        held = worker.batches.popleft()
        worker.lanes.clear()  # the worker may have kept none of them
    entries = _entries(held)
    if len(entries) > 1:  # nothing ran: send each call alone to find the one at fault
        _requeue(runner, [[e] for e in entries])
        return
    call = entries[0].call
    error = UnpicklableArgumentError(
        f"the call {call.task_run.name!r} could not be unpickled in the worker process; "
        "its arguments must be rebuildable from their pickle there"
    )
    runner._finish(entries, Failed(error, message=str(error), run_count=0))


def _lost(runner: ProcessPoolTaskRunner, worker: Worker) -> None:
    """A worker died: blame the call it was running, place the ones it held again."""
    assert runner._selector is not None
    runner._selector.unregister(worker.outbox.fileno())
    worker.process.join(5)
    _states(runner, worker, worker.pages.left())  # the calls that finished: none is lost
    with runner._lock:
        runner._workers.pop(worker.outbox.fileno(), None)
        running = worker.running()
        # Calls started without an outcome here: the last was running. Before it, a lane's
        # calls that ended after the worker's last block (up to FLUSH_SECONDS of them) run again.
        unanswered = max(1, worker.pages.started - worker.done)
        batches = [_entries(b) for b in worker.batches]  # a lane's calls go on as ordinary calls
        worker.batches = deque()
        cancelling = runner._cancelling
    close_pipes(worker)
    if cancelling or not batches:
        runner._finish([e for b in batches for e in b], Cancelled("the flow run was cancelled"))
        return
    if runner._initializer_error is not None:  # it never ran a call: nothing to blame
        _requeue(runner, batches)
        return
    how = _exit_reason(worker.process.exitcode)
    again: list[list[Entry]] = []
    if running:
        culprit = batches[0].pop(min(unanswered, len(batches[0])) - 1)
        culprit.losses += 1
        if culprit.losses > culprit.call.task.retries:
            message = f"a worker process died ({how}) while running {culprit.call.task_run.name!r} (attempt {culprit.losses})"
            runner._finish([culprit], Crashed(message, run_count=culprit.losses))
        else:
            culprit.call.task_run.run_count = culprit.losses  # lost attempts count against its retries
            again.append([culprit])
    elif batches:  # it died between calls: loading the next batch, or killed from outside
        for entry in batches[0]:
            entry.orphaned += 1
    for batch in batches:
        again.extend([[e] for e in batch] if any(e.orphaned for e in batch) else [batch])
    _requeue(runner, [b for b in again if b])


def _requeue(runner: ProcessPoolTaskRunner, batches: Sequence[list[Entry]]) -> None:
    """Put batches at the front of the queue as they are (they were queued first)."""
    ready: list[Segment] = []
    for entries in batches:
        if len(entries) == 1 and entries[0].orphaned >= _MAX_ORPHANED:
            entry = entries[0]
            message = f"worker processes died {entry.orphaned} times holding {entry.call.task_run.name!r} before it started; loading its arguments may kill them"
            runner._finish(entries, Crashed(message, run_count=0))
            continue
        ready.append(Segment(entries, None))
    with runner._lock:
        if runner._cancelling:
            lost = [e for segment in ready for e in segment.entries]
        else:
            lost = []
            runner._queue.extendleft(reversed(ready))
            runner._dispatch()
    runner._settle()
    if lost:
        runner._finish(lost, Cancelled("the flow run was cancelled before this run started"))


def _entries(batch: Sent | LaneSent) -> Sent:
    """A batch as ordinary calls: a lane's unanswered calls with their lane futures (see process_lanes)."""
    if isinstance(batch, Sent):
        return batch
    return Sent([Entry(call, future) for call, future in as_calls(batch)], None)


def _decoded(payload: bytes) -> State[Any]:
    try:
        return decode_state(payload)
    except Exception as exc:  # the worker checked it loads; a second line of defence
        return Failed(RunError(f"the outcome of this run could not be unpickled here: {exc!r}"))


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
