"""Adaptive batches on Ray: many calls of a map run as one Ray task.

::

    map(calls) ─▶ BatchFeeder (per task: BatchSizer) ─ two batches in flight per CPU of the cluster
                      │ cut a batch: its calls' upstreams → ObjectRefs (a batch's state
                      │ ref stands for each call in it), shared values put once
                      ▼
    batch_function(task, flow run).remote(calls, *upstream refs, *shared refs)  ── one Ray task
                      │ worker: each call through the engine on its own → BatchResult
                      ▼
    header in (settler thread): each call's future gets its State (a large result stays
                   in Ray until read); the batch's time on its worker teaches the sizer,
                   and the next batch is cut
    error:         a batch of one call ends as an unbatched run would (a lost worker
                   costs it an attempt). A larger batch lost as a whole (its worker
                   died, it could not be loaded there): each call is placed again
                   alone, charged nothing. A Ray task has its worker process to itself,
                   so the call that kills its worker then loses it alone and ends
                   Crashed (or runs again while its retries allow); the others complete.

Ray charges about half a millisecond per task it schedules; a batch pays it
once for all its calls, which is what makes a map of tiny tasks faster than
raw ``ray.remote`` + ``ray.get``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from taskyard.runners.base import BatchResult, BatchSizer, Cancelled, Crashed, State, set_state
from taskyard.runners.toolkit import BatchFeeder, TaskSizers, batch_upstreams, lost_state
from taskyard_ray import wire
from taskyard_ray.arrivals import Arrived

if TYPE_CHECKING:
    from taskyard_ray.runner import RayTaskRunner, _Entry

__all__ = ("RayBatches", "pick")

logger = logging.getLogger("taskyard.ray")


class Sent:
    """One batch on Ray."""

    __slots__ = ("entries", "sizer", "seq", "state_ref")

    def __init__(self, entries: list[_Entry], sizer: BatchSizer, seq: int, state_ref: Any) -> None:
        self.entries, self.sizer, self.seq, self.state_ref = entries, sizer, seq, state_ref


class RayBatches:
    """The runner's batching: sizers per task, the feeder, and what a batch's end means."""

    def __init__(self, runner: RayTaskRunner) -> None:
        self.runner = runner
        self.sizers = TaskSizers(runner.batch_size)
        self.feeder: BatchFeeder[_Entry] = BatchFeeder(self._send, runner._cpus)

    def _send(self, entries: list[_Entry], sizer: BatchSizer) -> None:
        if not self._submit(entries, sizer):
            self.feeder.finished(sizer, 0, None)

    def _submit(self, entries: list[_Entry], sizer: BatchSizer) -> bool:
        """Submit ``entries`` as one Ray task; False if none of them went that way (placed alone, or ended)."""
        runner = self.runner
        if runner._outstanding.closing:
            for entry in entries:
                set_state(entry.future, Cancelled("the flow run was cancelled before this run started"))
            return False
        if runner._head_lost is not None:  # nothing runs on a cluster without its head: each ends Crashed
            for entry in entries:
                runner._place(entry)
            return False
        found = batch_upstreams([e.call for e in entries], runner._native_of)
        for i in found.waiting:  # an upstream with no ObjectRef yet: this call goes alone, later
            runner._place(entries[i])
        ready = [entries[i] for i in found.ready]
        if not ready:
            return False
        first = ready[0]
        assert runner._capacity is not None
        if runner._capacity.refusal(first.options, first.call.task_run.name) is not None:
            for entry in ready:  # each ends Failed, naming itself
                runner._place(entry)
            return False
        ray = runner._ray
        shared = next((e.shared for e in ready if e.shared), ())
        try:
            # One batch's ref stands for many upstream ids: Ray gets each ref once.
            slots: dict[Any, int] = {}
            for value in found.values:
                slots.setdefault(value if isinstance(value, ray.ObjectRef) else id(value), len(slots))
            values = list({id(v) if not isinstance(v, ray.ObjectRef) else v: v for v in found.values}.values())
            where = tuple(slots[v if isinstance(v, ray.ObjectRef) else id(v)] for v in found.values)
            runs = [(e.call.parameters, e.call.task_run, e.call.upstreams) for e in ready]
            payload = wire.dumps((runs, tuple(found.ids), where))
            assert runner._functions is not None
            function = runner._functions.get(first.call, first.options, batch=True)
            header, state_ref = function.remote(payload, *values, *shared)
        except Exception as exc:  # e.g. a call that will not pickle: each goes alone and says so
            logger.debug("a batch of %d calls could not be submitted (%r); sending them one by one", len(ready), exc)
            for entry in ready:
                runner._place(entry)
            return False
        sent = Sent(ready, sizer, next(runner._seq), state_ref)
        upstream_refs = tuple(v for v in found.values if isinstance(v, ray.ObjectRef))
        for i, entry in enumerate(ready):
            entry.header, entry.key, entry.seq = header, (header, i), sent.seq
            entry.upstream_refs = upstream_refs
            entry.future.native = state_ref
            runner._outstanding.add(entry.key, entry)
        if runner._head_lost is not None:  # lost meanwhile
            for entry in ready:
                if runner._outstanding.pop(entry.key) is not None:
                    set_state(entry.future, lost_state(entry.call, entry.losses + 1, runner._head_lost))
            return True
        assert runner._arrivals is not None
        runner._arrivals.when_ready(header, sent)
        return True

    def settle(self, sent: Sent, done: Arrived) -> None:
        """The batch's header arrived (or its error): complete its calls (the settler thread)."""
        runner = self.runner
        mine = [e for e in sent.entries if runner._outstanding.pop(e.key) is e]
        error = done.exception()
        result = None
        if error is None:
            try:
                result = wire.as_outcome(done.result())
            except Exception as exc:
                error = exc
        try:
            if isinstance(result, BatchResult):
                for entry in mine:
                    runner._finished(entry, pick(result, entry.future.task_run_id))
                return
            runner._lose_ref(sent.state_ref)
            assert error is not None
            if len(sent.entries) > 1 and mine:
                logger.debug("a batch of %d calls failed as a whole (%r); placing each call alone", len(mine), error)
            for entry in mine:
                runner._on_error(entry, error, charge=len(sent.entries) == 1)
        finally:
            # The time the batch ran on its worker teaches the sizer. Its runs are settled first:
            # sending the next batch asks the cluster for its CPUs, which blocks once the head is lost.
            self.feeder.finished(sent.sizer, len(sent.entries), result.seconds if isinstance(result, BatchResult) else None)


def pick(outcome: Any, run_id: str) -> State[Any]:
    """The State of run ``run_id`` in what its Ray task returned (its own State, or its batch's)."""
    outcome = wire.as_outcome(outcome)
    if type(outcome) is BatchResult:
        found = outcome.states.get(run_id)
        if found is None:
            return Crashed(f"task run {run_id!r} is missing from the result of its batch")
        return found
    return outcome  # type: ignore[no-any-return]
