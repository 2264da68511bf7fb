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
                   whole cluster, halved while it fails — the call that kills its
                   worker then ends Crashed (or runs again) alone, the rest complete

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

from taskyard.exceptions import CrashedRunError
from taskyard.runners.base import BatchResult, BatchSizer, Cancelled, Crashed, set_state
from taskyard.runners.toolkit import BatchFeeder, lose_attempt, lost_state, split_upstreams

if TYPE_CHECKING:
    from taskyard_dask.runner import DaskTaskRunner, _Entry

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

    def __init__(self, entries: list[_Entry], sizer: BatchSizer | None) -> None:
        self.entries, self.sizer, self.started = entries, sizer, time.perf_counter()


class DaskBatches:
    """The runner's batching: sizers per task, the feeder, and what a batch's end means."""

    def __init__(self, runner: DaskTaskRunner) -> None:
        self.runner = runner
        self.feeder: BatchFeeder[_Entry] = BatchFeeder(self._send, runner._threads)
        self._sizers: dict[int, tuple[Any, BatchSizer]] = {}
        self._lane: deque[list[_Entry]] = deque()
        self._lane_lock = threading.Lock()
        self._lane_busy = False
        # The sizers (one per task) whose batches held results too large to bring back
        # at once: their later batches stay on the cluster without asking their size.
        self._large_results: set[int] = set()

    def sizer(self, task: Any) -> BatchSizer:
        """The sizer of ``task`` (its own ``batch_size``, else the runner's, else adaptive)."""
        known = self._sizers.get(id(task))
        if known is None or known[0] is not task:
            fixed = task.batch_size if task.batch_size is not None else self.runner.batch_size
            known = self._sizers[id(task)] = (task, BatchSizer(fixed))
        return known[1]

    def pending(self) -> list[_Entry]:
        """The calls waiting here, not yet on the cluster."""
        with self._lane_lock:
            lane = [e for group in self._lane for e in group]
        return self.feeder.queued() + lane

    def cancel(self) -> list[_Entry]:
        """Send nothing more; return (and forget) the calls waiting here."""
        with self._lane_lock:
            lane = [e for group in self._lane for e in group]
            self._lane.clear()
        return self.feeder.cancel() + lane

    def _send(self, entries: list[_Entry], sizer: BatchSizer) -> None:
        sent = self._submit(entries, sizer)
        if sent is None:
            self.feeder.finished(sizer, 0, None)

    def _submit(self, entries: list[_Entry], sizer: BatchSizer | None) -> _Sent | None:
        """Submit ``entries`` as one Dask task; None if none of them went (placed alone, or failed)."""
        runner = self.runner
        ids: list[str] = []
        values: list[Any] = []
        ready: list[_Entry] = []
        for entry in entries:
            found = split_upstreams(entry.call, lambda up: runner._usable(up.native))
            if found.waiting:  # an upstream with no Dask future yet: this call goes alone, later
                runner._place(entry)
                continue
            ready.append(entry)
            for run_id, value in zip(found.ids, found.values, strict=True):
                if run_id not in ids:
                    ids.append(run_id)
                    values.append(value)
        if not ready:
            return None
        shared = next((e.shared for e in ready if e.shared), ())
        options = ready[0].options
        key = f"{ready[0].call.task_run.task_name}-batch-{os.urandom(8).hex()}"
        from taskyard_dask.runner import _annotated, _submit_kwargs
        from taskyard_dask.worker import run_calls_on_worker

        try:
            with _annotated(options):
                native = runner._client.submit(
                    run_calls_on_worker, [e.call for e in ready], tuple(ids), *values, *shared,
                    key=key, pure=False, **_submit_kwargs(options),
                )  # fmt: skip
        except Exception as exc:  # e.g. a call that will not pickle: each goes alone and says so
            logger.debug("a batch of %d calls could not be submitted (%r); sending them one by one", len(ready), exc)
            for entry in ready:
                entry.placements += 1
                entry.key = f"{entry.call.task_run.task_name}-{entry.call.task_run.id}-s{entry.placements}"
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

    def _quarantine(self, groups: list[list[_Entry]]) -> None:
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

    def _lane_done(self, sent: _Sent, mine: list[_Entry], native: Any) -> None:
        with self._lane_lock:
            self._lane_busy = False
        status = native.status
        if status == "error" and mine:
            if len(mine) > 1:
                half = len(mine) // 2
                self._quarantine([mine[:half], mine[half:]])
                return
            self._charge(mine[0], native)
        self._lane_pump()

    def _charge(self, entry: _Entry, native: Any) -> None:
        """The one call of a failed group: its run lost its worker (or could not run there)."""
        try:
            exc = native.exception(timeout=30)
        except Exception as error:
            exc = error
        call = entry.call
        entry.losses += 1
        if isinstance(exc, self.runner._killed_worker):
            if lose_attempt(call, entry.losses, self.runner._outstanding.closing):
                logger.warning(
                    "a Dask worker died running task run %r; running it again (retry %d of %d)",
                    call.task_run.name, entry.losses, call.task.retries,
                )  # fmt: skip
                self._quarantine([[entry]])
                return
            set_state(entry.future, lost_state(call, entry.losses, "a Dask worker process died", exc))
            return
        message = f"Dask failed running task run {call.task_run.name!r}: {exc!r}"
        crash = CrashedRunError(message)
        crash.__cause__ = exc if isinstance(exc, BaseException) else None
        set_state(entry.future, Crashed(message, exc=crash, run_count=entry.losses))

    # -- the end of a batch (Dask's callback thread) ---------------------------------------

    def _finished(self, native: Any, mine: list[_Entry], sizer: BatchSizer | None) -> float | None:
        """Complete the calls of a finished batch: small results now, large ones when read.

        Returns how long the batch ran on its worker, when its result came back.

        A batch of small results (the tiny calls batching is for: at most
        :data:`EAGER_BYTES_PER_CALL` a call on average) is brought back at
        once, in one round trip: a worker that dies later cannot take its
        states with it, and futures need no further trip when read. A batch
        holding larger results stays on the cluster until a call's State is
        read, as an unbatched run's would, so downstream runs take them there.
        """
        from taskyard_dask.runner import _REMOTE, _state_for

        if not mine:
            return None
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
                    set_state(entry.future, _state_for(entry.future, result))
                return result.seconds
        for entry in mine:
            future = entry.future
            future._batch.remote[future.task_run_id] = future
            future._set_state(_REMOTE)
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
                ran = self._finished(native, mine, sent.sizer)
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
