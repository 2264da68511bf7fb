"""Adaptive batches on Dask: many calls of a map run as one Dask task.

::

    map(calls) ─▶ BatchFeeder (per task: BatchSizer) ─ a few batches in flight per worker thread
                      │ cut a batch: its calls' upstreams → Dask futures (a batch's
                      │ future stands for each call in it), shared values scattered once
                      ▼
    client.submit(run_calls_on_worker, calls, ids, *upstreams, *shared)  ── one Dask task
                      │ worker: each call through the engine on its own → BatchResult
                      ▼
    done-callback: every call's future is marked finished (its State stays on the
                   cluster until read; reading one gathers the batch once); the
                   batch's time teaches the sizer; the next batch is cut
    error:         the batch is quarantined: run again one group at a time on the
                   whole cluster, each call reporting its start, halved while it
                   fails — the call that kills its worker then ends Crashed (or
                   runs again) alone, the rest complete (taskyard_dask.losses)

A scheduler round trip costs ~2 ms per Dask task; a batch pays it once for
all its calls, which is what makes a map of tiny tasks faster than a raw
``client.map``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from taskyard.runners.base import BatchResult, BatchSizer, Cancelled, Crashed, set_state
from taskyard.runners.toolkit import BatchFeeder, TaskSizers, batch_upstreams
from taskyard_dask.entries import Entry, annotated, submit_kwargs
from taskyard_dask.losses import QUEUED, crash, error_of
from taskyard_dask.reading import state_for

if TYPE_CHECKING:
    from taskyard_dask.runner import DaskTaskRunner

__all__ = ("DaskBatches", "EAGER_BYTES", "EAGER_BYTES_PER_CALL")

#: A finished batch whose results total at most this much comes back to the flow process at once ...
EAGER_BYTES = 1_000_000
#: ... if they are also small per call: on average no larger than a State's own bookkeeping. Larger
#: results stay on the cluster until read, so a map feeding a reduce moves no data through the flow.
EAGER_BYTES_PER_CALL = 1000
# What dask.sizeof counts for one State besides its result (taskyard_dask.worker).
_STATE_BYTES = 1000

logger = logging.getLogger("taskyard.dask")


class _Sent:
    """One batch on the cluster."""

    __slots__ = ("entries", "sizer", "started")

    def __init__(self, entries: list[Entry], sizer: BatchSizer | None) -> None:
        self.entries, self.sizer, self.started = entries, sizer, time.perf_counter()


class DaskBatches:
    """The runner's batching: sizers per task, the feeder, and what a batch's end means."""

    def __init__(self, runner: DaskTaskRunner) -> None:
        self.runner = runner
        self.feeder: BatchFeeder[Entry] = BatchFeeder(self._send, runner._threads)
        self._sizers = TaskSizers(runner.batch_size)
        self._lane: deque[list[Entry]] = deque()
        self._lane_lock = threading.Lock()
        self._lane_busy = False
        # The sizers (one per task) whose batches held results too large to bring back
        # at once: their later batches stay on the cluster without asking their size.
        self._large_results: set[int] = set()

    def sizer(self, task: Any) -> BatchSizer:
        """The sizer of ``task`` (its own ``batch_size``, else the runner's, else adaptive)."""
        return self._sizers(task)

    def pending(self) -> list[Entry]:
        """The calls waiting here, not yet on the cluster."""
        with self._lane_lock:
            lane = [e for group in self._lane for e in group]
        return self.feeder.queued() + lane

    def cancel(self) -> list[Entry]:
        """Send nothing more; return (and forget) the calls waiting here."""
        with self._lane_lock:
            lane = [e for group in self._lane for e in group]
            self._lane.clear()
        return self.feeder.cancel() + lane

    def _send(self, entries: list[Entry], sizer: BatchSizer) -> None:
        sent = self._submit(entries, sizer)
        if sent is None:
            self.feeder.finished(sizer, 0, None)

    def _submit(self, entries: list[Entry], sizer: BatchSizer | None) -> _Sent | None:
        """Submit ``entries`` as one Dask task; None if none of them went (placed alone, or failed)."""
        runner = self.runner
        found = batch_upstreams([e.call for e in entries], lambda up: runner._usable(up.native))
        for i in found.waiting:  # an upstream with no Dask future yet: this call goes alone, later
            runner._place(entries[i])
        ready = [entries[i] for i in found.ready]
        ids, values = found.ids, found.values
        if not ready:
            return None
        shared = next((e.shared for e in ready if e.shared), ())
        options = ready[0].options
        key = f"{ready[0].call.task_run.task_name}-batch-{os.urandom(8).hex()}"
        from taskyard_dask.worker import run_calls_on_worker, run_marked_calls_on_worker

        # A quarantined group (no sizer) reports each call's start, so its loss is judged exactly.
        run, head = (run_calls_on_worker, ()) if sizer is not None else (run_marked_calls_on_worker, (runner._losses.topic,))
        try:
            with annotated(options):
                native = runner._client.submit(
                    run, *head, [e.call for e in ready], tuple(ids), *values, *shared,
                    key=key, pure=False, **submit_kwargs(options),
                )  # fmt: skip
        except Exception as exc:  # e.g. a call that will not pickle: each goes alone and says so
            logger.debug("a batch of %d calls could not be submitted (%r); sending them one by one", len(ready), exc)
            for entry in ready:
                entry.rekey("s")
                runner._place(entry)
            return None
        sent = _Sent(ready, sizer)
        for i, entry in enumerate(ready):
            entry.native = native
            entry.future.native = native
            runner._outstanding.add((key, i), entry)
        native.add_done_callback(lambda done: self._on_done(sent, done))
        return sent

    # -- a batch that failed as a whole: find the call at fault ------------------------------

    def _quarantine(self, groups: list[list[Entry]]) -> None:
        """Run ``groups`` one at a time on the cluster, halving each that fails again.

        One group in flight at a time means no two suspects ever share a
        worker, so a single call whose run kills its worker is the one at
        fault: it alone loses an attempt (and runs again while its retries
        allow); the calls that only shared its batch complete.
        """
        with self._lane_lock:
            self._lane.extendleft(reversed(groups))
        self._lane_pump()

    def _lane_pump(self) -> None:
        while True:
            with self._lane_lock:
                if self._lane_busy or not self._lane or self.runner._outstanding.closing:
                    return
                group = self._lane.popleft()
                self._lane_busy = True
            if self._submit(group, None) is not None:
                return
            with self._lane_lock:
                self._lane_busy = False

    def _lane_done(self, sent: _Sent, mine: list[Entry], native: Any) -> None:
        with self._lane_lock:
            self._lane_busy = False
        if native.status == "error" and mine:
            exc = error_of(native)
            if self.runner._losses.is_killed(exc):
                self._judge(mine, native.key, exc)
            elif len(mine) > 1:
                self._quarantine(self._halves(mine))
                return
            else:
                mine[0].losses += 1
                crash(mine[0], exc)
        self._lane_pump()

    def _judge(self, group: list[Entry], key: str, exc: BaseException) -> None:
        """A quarantined group lost its worker: had its calls started? (see taskyard_dask.losses)"""
        losses, outstanding = self.runner._losses, self.runner._outstanding
        for entry in group:
            outstanding.add(("judging", id(entry)), entry)  # still in flight for shutdown

        def started() -> bool:
            return any(losses.started(f"{key}/{e.call.task_run.id}") for e in group)

        def decide(verdict: str) -> None:
            kept = [e for e in group if outstanding.pop(("judging", id(e))) is e]  # not cancelled meanwhile
            if not kept:
                return
            if verdict == QUEUED:  # none of them started: the same group again
                again = [e for e in kept if losses.orphan(e)]
                self._quarantine([again] if again else [])
            elif len(kept) > 1:
                self._quarantine(self._halves(kept))
            # Alone in the lane: it was running (UNKNOWN: its start report could not be made).
            elif losses.lose(kept[0], exc):
                self._quarantine([kept])

        losses.deaths.judge(exc, key, started, decide)

    @staticmethod
    def _halves(group: list[Entry]) -> list[list[Entry]]:
        half = len(group) // 2
        return [group[:half], group[half:]]

    # -- the end of a batch (Dask's callback thread) ---------------------------------------

    def _finished(self, native: Any, mine: list[Entry], sent: _Sent) -> float | None:
        """Complete the calls of a finished batch: small results now, large ones when read.

        Returns how long the batch ran on its worker, when its result came back.

        A batch of small results (the tiny calls batching is for: at most
        :data:`EAGER_BYTES_PER_CALL` a call on average) is brought back at
        once, in one round trip: a worker that dies later cannot take its
        states with it, and futures need no further trip when read. A batch
        holding larger results stays on the cluster until a call's State is
        read, as an unbatched run's would, so downstream runs take them there.

        Once every call of a batch has its State here, the batch's Dask
        future is let go (the calls' ``native`` turns None): the cluster
        forgets the batch (a scheduler in this process — a LocalCluster's —
        kept a copy of its calls for as long as the future lived, ~700 bytes
        a call), and a call submitted downstream later is handed its
        upstream's small State itself.
        """
        if not mine:
            return None
        sizer = sent.sizer
        size = None
        if id(sizer) not in self._large_results:  # one scheduler round trip, while results are small
            try:
                size = self.runner._client.nbytes([native.key], summary=False).get(native.key)
            except Exception:
                size = None
        small = min(EAGER_BYTES, EAGER_BYTES_PER_CALL * len(mine)) + _STATE_BYTES * len(mine)
        if size is not None and size > small and sizer is not None:
            self._large_results.add(id(sizer))
        if size is not None and size <= small:
            try:
                result = native.result(timeout=60)
            except Exception:  # read it later, the way a large one is read
                result = None
            if isinstance(result, BatchResult):
                for entry in mine:
                    set_state(entry.future, state_for(entry.future, result))
                if len(mine) == len(sent.entries):  # none taken by a cancellation meanwhile
                    for entry in mine:
                        entry.native = entry.future.native = None
                return result.seconds
        for entry in mine:
            entry.future.mark_remote()
        return None

    def _on_done(self, sent: _Sent, native: Any) -> None:
        runner = self.runner
        mine = [e for i, e in enumerate(sent.entries) if runner._outstanding.pop((native.key, i)) is e]
        status = native.status
        if sent.sizer is not None:  # the next batch goes out first; this one's news is read after
            self.feeder.finished(sent.sizer, len(sent.entries), None)
        try:
            if status == "finished":
                # The time the batch ran on its worker teaches the sizer; the time
                # until its news arrived here would count the scheduler's round trip
                # as work, and on a busy cluster shrink batches just when they help most.
                ran = self._finished(native, mine, sent)
                if sent.sizer is not None:
                    sent.sizer.record(len(sent.entries), ran if ran is not None else time.perf_counter() - sent.started)
            elif not mine:
                pass  # taken by a cancellation
            elif status == "cancelled" and runner._outstanding.closing:
                for entry in mine:
                    set_state(entry.future, Cancelled("the flow run was cancelled before this run finished"))
            elif status == "error":
                if sent.sizer is not None:
                    # The batch failed as a whole (its worker died, it could not be
                    # loaded there): find the call at fault; the others complete.
                    logger.debug("a batch of %d calls failed as a whole; isolating the call at fault", len(mine))
                    exc = error_of(native)
                    if runner._losses.is_killed(exc):  # it counts among the runs lost with its worker
                        runner._losses.deaths.judge(exc, native.key, lambda: None, None)
                    self._quarantine([mine])
            else:
                message = "Dask dropped this run's batch: the connection to the scheduler was lost, or the cluster went away"
                for entry in mine:
                    set_state(entry.future, Crashed(message, run_count=entry.losses + 1))
        except Exception:  # a callback must never die silently: the futures would hang
            logger.exception("handling the end of a batch failed")
            for entry in mine:
                set_state(entry.future, Crashed("taskyard failed to handle the end of this run's batch"))
        finally:
            if sent.sizer is None:
                self._lane_done(sent, mine, native)
