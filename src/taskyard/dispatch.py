"""The dispatcher: ``submit``/``map`` in a flow run → task calls on the runner.

::

    Task.submit / Task.map
        │ bind arguments, expand the map, name the runs
        ▼
    Dispatcher ── scan arguments for upstream futures ──┐
        │ none pending: runner.submit / runner.map      │ some pending:
        │ (a map's ready calls go in one batch)         │  native runner → submit now, carrying them
        ▼                                               │  otherwise → a placeholder future; when the
    TaskFuture (the runner's)                           │  last upstream finishes (done-callback) the
                                                        │  call is resolved and submitted, or ends
                                                        ▼  NotReady if an upstream failed
                                                   placeholder TaskFuture ◀── runner's future

No thread ever blocks waiting for an upstream: a run is handed to the runner
when its inputs exist, so a chain of 10,000 dependent tasks completes on a
single worker. Concurrency limits (per task, per tag) and, for runners that
declare a capacity, resource requests are kept here as well, by holding calls
back until they fit — never by blocking a worker. A call held by several
limits waits in the queue of one that is full; when that one frees, the call
is looked at again and moves to the next full one or starts, so it is never
stranded. Queues are first in, first out: a large request at the head is not
overtaken by smaller ones behind it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskyard.context import FlowRunInfo, TaskRunInfo, current_tags
from taskyard.engine import TaskCall, failed_state
from taskyard.exceptions import RunnerError
from taskyard.futures import FutureList, TaskFuture, add_done_callbacks
from taskyard.gcpause import collector_paused
from taskyard.lanes import Lane, lane_ready
from taskyard.inputs import ATOMIC, FutureRef, Upstream, first_blocking_failure, resolve, scan
from taskyard.logs import RunLoggerAdapter, run_extra
from taskyard.runners.base import unsatisfiable_resources
from taskyard.runids import lane_base
from taskyard.states import Cancelled, State
from taskyard.transactions import open_transaction

if TYPE_CHECKING:
    from taskyard.progress import RunCounter
    from taskyard.runners.base import TaskRunner
    from taskyard.store.recorder import Recorder
    from taskyard.tasks import Task

__all__ = ("Dispatcher", "new_run_id")


def new_run_id() -> str:
    """A random 128-bit id as 32 hex digits (cheaper than uuid4, as unique)."""
    return os.urandom(16).hex()


def _default_name_prefix(task: Task[..., Any]) -> str | None:
    """What the default names of ``task``'s runs start with (the first 8 characters of the id follow); None if it names them."""
    return f"{task.name}-" if task.task_run_name is None else None


def _run_ids(count: int) -> str:
    """``count`` :func:`new_run_id` ids, concatenated: one system call for a whole map, not one per run.

    Run ``i``'s id is ``ids[32 * i : 32 * i + 32]``; the run store keeps the
    string as the map's column of ids, not each id again.
    """
    return os.urandom(16 * count).hex()


class _Gate:
    """A limit: the amounts of the calls in flight stay within ``limit``, the rest queued.

    A concurrency limit counts each call as 1; a resource counts its request.
    """

    __slots__ = ("limit", "in_flight", "waiting")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.in_flight = 0.0
        self.waiting: deque[tuple[TaskCall[Any], TaskFuture[Any]]] = deque()

    def fits(self, amount: float) -> bool:
        # The tolerance keeps sums of fractions (0.1 + 0.2) from refusing a fit.
        return self.in_flight + amount <= self.limit * (1 + 1e-9) + 1e-9


_Held = list[tuple[_Gate, float]]


def _blocking(gates: _Held, queued_in: _Gate | None = None) -> _Gate | None:
    """The first gate that holds a call back: it has no room, or others queue there first.

    ``queued_in`` is the gate whose queue the call is at the head of. Queuing
    behind earlier calls keeps a large request from being overtaken forever
    by smaller ones; and since a queue only ever forms behind a gate with
    calls in flight, whose ends re-examine the queue, none is stranded.
    """
    for gate, amount in gates:
        if not gate.fits(amount) or (gate.waiting and gate is not queued_in):
            return gate
    return None


class Dispatcher:
    """Turns the submissions of one flow run into calls on its runner."""

    def __init__(
        self,
        runner: TaskRunner[Any],
        flow_run: FlowRunInfo | None,
        tag_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.runner = runner
        self.flow_run = flow_run
        self.futures: list[TaskFuture[Any]] = []
        # Maps run as lanes (taskyard.lanes): their futures are the mapper's alone, so that they
        # go when the list goes; the lane answers for its calls.
        self.lanes: list[Lane] = []
        self._native = runner.resolves_dependencies
        self._lock = threading.Lock()
        self._tag_gates = {tag: _Gate(limit) for tag, limit in (tag_limits or {}).items()}
        self._task_gates: dict[int, _Gate] = {}
        self._capacity = runner.resource_capacity()
        self._resource_gates: dict[str, _Gate] = {}
        # Calls whose gates have room, started by one drain loop at a time: a
        # call that finishes at once (a cancelled or failed submission) must
        # not start the next one from inside its own done-callback (recursion).
        self._to_start: deque[tuple[TaskCall[Any], _Held, TaskFuture[Any]]] = deque()
        self._draining = False
        # Set by the flow run when a live progress display may be shown.
        self.counter: RunCounter | None = None
        # Set by the flow engine when the run is recorded (taskyard.store).
        self.recorder: Recorder | None = None
        self.cancel_reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Cancel the flow run's task runs: outstanding ones end Cancelled, no new one starts."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.runner.shutdown(wait=False, cancel_pending=True)

    # -- naming ---------------------------------------------------------------

    def task_run(self, task: Task[..., Any], parameters: dict[str, Any], map_index: int = -1) -> TaskRunInfo:
        """A new task run identity for a call of ``task``."""
        return self._namer(task)(parameters, map_index, new_run_id())

    def _namer(self, task: Task[..., Any]) -> Callable[[dict[str, Any], int, str], TaskRunInfo]:
        """Makes task run identities for calls of ``task`` made here and now (one submit, or every call of a map).

        What the calls share (tags, transaction, flow run, how names are
        made) is looked up once, not once per call.
        """
        tags = current_tags() | task.tags if task.tags else current_tags()
        flow_run_id = self.flow_run.id if self.flow_run is not None else None
        txn = open_transaction()
        transaction = txn.id if txn is not None else None
        task_name, prefix = task.name, _default_name_prefix(task)

        def make(parameters: dict[str, Any], map_index: int, run_id: str) -> TaskRunInfo:
            name = prefix + run_id[:8] if prefix is not None else task.run_name(parameters, run_id)
            return TaskRunInfo(run_id, name, task_name, tags, map_index, transaction=transaction, flow_run_id=flow_run_id)

        return make

    # -- submission --------------------------------------------------------------

    def submit(self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Any = None) -> TaskFuture[Any]:
        """Hand one call of ``task`` to the runner (now, or once its upstreams are done)."""
        submitted = time.time()
        ups: list[Upstream] = []
        needs = scan(parameters, ups)
        if wait_for is not None:
            scan(wait_for, ups)
        call = TaskCall(task, parameters, self.task_run(task, parameters), self.flow_run)
        refused = self._refusal(call)
        future = self._route(call, ups, needs) if refused is None else _finished(call, refused)
        self.futures.append(future)
        txn = open_transaction()
        if txn is not None:
            txn.note_future(task, call.task_run, future)
        if self.counter is not None:
            self.counter.track(task.name, (future,))
        if self.recorder is not None and self.flow_run is not None:
            self.recorder.track(self.flow_run.id, (call.task_run,), (future,), submitted)
        return future

    def map(
        self,
        task: Task[..., Any],
        static: dict[str, Any],
        mapped: dict[str, Sequence[Any]],
        length: int,
        wait_for: Any = None,
    ) -> FutureList[Any]:
        """Hand ``length`` calls of ``task`` to the runner, ready ones in one batch.

        ``static`` arguments go to every call; call ``i`` gets item ``i`` of
        each sequence in ``mapped``.
        """
        if length:
            # One line per map, never one per run: the progress display and the
            # flow run's summary line count the runs.
            log = RunLoggerAdapter(logging.getLogger("taskyard.flow_runs"), run_extra(self.flow_run, None))
            log.info("Submitting %s run%s of task %r", f"{length:,}", "" if length == 1 else "s", task.name)
        submitted = time.time()
        base_ups: list[Upstream] = []
        static_needs = scan(static, base_ups)
        if wait_for is not None:
            scan(wait_for, base_ups)
        ready_static = static_needs and not self._native and all(_done(u.future) for u in base_ups)
        if ready_static and first_blocking_failure(base_ups, _state_of) is None:
            static, base_ups, static_needs = resolve(static), [], False
        gated = self._gates_for(task)
        if not (gated or static_needs or base_ups):
            lane = self._map_lane(task, static, mapped, length, submitted)
            if lane is not None:
                return lane
        # The calls handed to the runner in one batch, and the futures of the
        # others by map index (a refused call's, or one routed on its own): no
        # list of indices, nor one of futures to fill, for a map whose calls all go.
        ready: list[TaskCall[Any]] = []
        others: dict[int, TaskFuture[Any]] = {}
        named_columns = list(mapped.items())
        runs: list[TaskRunInfo] = []
        task_run, flow_run = self._namer(task), self.flow_run
        with collector_paused(length):  # the runner may run user code: not in there
            ids = _run_ids(length)
            for i in range(length):
                run_id = ids[32 * i : 32 * i + 32]
                params = dict(static)
                ups = list(base_ups) if base_ups else _NO_UPS  # a list of its own once one is found
                needs = static_needs
                for name, column in named_columns:
                    value = column[i]
                    params[name] = value
                    if type(value) not in ATOMIC:
                        if ups is _NO_UPS:
                            ups = []
                        needs = scan(value, ups) or needs
                info = task_run(params, i, run_id)
                call = TaskCall(task, params, info, flow_run)
                runs.append(info)
                refused = self._refusal(call) if task.resources else None
                if refused is not None:
                    others[i] = _finished(call, refused)
                elif self._native and ups and not gated and not any(isinstance(u.future, State) for u in ups):
                    call.upstreams = ups  # the runner resolves them on its backend, and may batch the call
                    ready.append(call)
                elif needs or ups or gated:
                    others[i] = self._route(call, ups, needs)
                else:
                    ready.append(call)
        counted = None
        placed: list[TaskFuture[Any]] = []
        if ready:
            if self.counter is not None and not self.runner.concurrent:
                # Each call runs as it is placed: counted one by one, so the display can show it.
                counted = self.counter.expect(task.name, length, mapped=True)
            try:
                placed = self.runner.map(ready) if counted is None else self._place_each(ready, counted.on_done)
            except RunnerError as exc:  # the flow run is ending (cancelled): nothing new starts
                placed = [_finished(call, Cancelled(f"not started: {exc}")) for call in ready]
            del ready
        if others:  # the placed futures fill the places of the calls that went, in order
            going = iter(placed)
            result: FutureList[Any] = FutureList(others[i] if i in others else next(going) for i in range(length))
        else:
            result = FutureList(placed)
        del placed
        self.futures.extend(result)
        txn = open_transaction()
        if txn is not None:
            for run, future in zip(runs, result, strict=True):
                txn.note_future(task, run, future)
        if counted is not None:
            add_done_callbacks(list(others.values()), counted.on_done)
        elif length and self.counter is not None:
            self.counter.track(task.name, result, mapped=True)
        if self.recorder is not None and self.flow_run is not None:
            # The string of ids spares the store reading runs whose states the engine made
            # here; a runner that ships its calls makes them elsewhere (32 bytes a run kept).
            shipped = self.runner.requires_pickling
            self.recorder.track(
                self.flow_run.id, runs, result, submitted, mapped=True, name_prefix=_default_name_prefix(task),
                ids=None if shipped else ids,
            )  # fmt: skip
        return result

    def _map_lane(
        self, task: Task[..., Any], static: dict[str, Any], mapped: dict[str, Sequence[Any]], length: int, submitted: float
    ) -> FutureList[Any] | None:
        """The calls of a map in one lane (taskyard.lanes), if the runner runs lanes and every call is plain; else None."""
        runner, flow_run = self.runner, self.flow_run
        if length < 2 or not runner.supports_lanes or flow_run is None or open_transaction() is not None:
            return None
        plain = lane_ready(task, flow_run, static, mapped)
        if plain is None:
            return None
        tags = current_tags() | task.tags if task.tags else current_tags()
        lane = Lane(task, flow_run, static, dict(mapped), length, lane_base(), tags, plain)
        if self.counter is not None:
            lane.watch(self.counter.expect(task.name, length, mapped=True).add)
        if self.recorder is not None:
            self.recorder.track_lane(flow_run.id, lane, submitted)
        try:
            runner.map_lane(lane)  # the workers start; the futures are made meanwhile
        except RunnerError as exc:  # the flow run is ending (cancelled): nothing new starts
            lane.settle_range(0, length, Cancelled(f"not started: {exc}"))
        self.lanes.append(lane)
        return lane.make_futures()

    def _place_each(self, calls: list[TaskCall[Any]], on_done: Callable[[TaskFuture[Any]], None]) -> list[TaskFuture[Any]]:
        """Submit calls one at a time, telling ``on_done`` of each future at once."""
        placed = []
        for call in calls:
            future = self.runner.submit(call)
            add_done_callbacks((future,), on_done)
            placed.append(future)
        return placed

    def _route(self, call: TaskCall[Any], ups: list[Upstream], needs: bool) -> TaskFuture[Any]:
        if any(isinstance(u.future, State) for u in ups):
            # States given as arguments are final already: judged here, and
            # never handed to a runner as upstreams to wait for.
            blocked = first_blocking_failure([u for u in ups if isinstance(u.future, State)], _state_of)
            if blocked is not None:
                return _finished(call, blocked)
            ups = [u for u in ups if not isinstance(u.future, State)]
        pending = [u for u in ups if not _done(u.future)]
        if self._native and ups:
            call.upstreams = ups
            return self._launch(call)
        if not pending:
            if ups:
                blocked = first_blocking_failure(ups, _state_of)
                if blocked is not None:
                    return _finished(call, blocked)
            if needs:
                try:
                    call.parameters = resolve(call.parameters)
                except Exception as exc:  # a result that could not be loaded
                    return _finished(call, failed_state(exc, 0))
            return self._launch(call)
        placeholder: TaskFuture[Any] = TaskFuture(call.task_run.id, call.task_run.name)
        waiting = {id(u.future): u.future for u in pending}
        counter = [len(waiting)]

        def on_upstream_done(_: TaskFuture[Any]) -> None:
            with self._lock:
                counter[0] -= 1
                if counter[0]:
                    return
            self._forward(self._route(call, ups, needs), placeholder)

        for future in waiting.values():
            future.add_done_callback(on_upstream_done)  # type: ignore[union-attr]
        return placeholder

    def _launch(self, call: TaskCall[Any]) -> TaskFuture[Any]:
        gates = self._gates_for(call.task, call.task_run.tags)
        if gates:
            return self._launch_gated(call, gates)
        try:
            future: TaskFuture[Any] = self.runner.submit(call)
            return future
        except RunnerError as exc:  # the flow run is ending: the runner is shut down
            return _finished(call, Cancelled(f"not started: {exc}"))

    @staticmethod
    def _forward(source: TaskFuture[Any], target: TaskFuture[Any]) -> None:
        target.native = source.native
        source.add_done_callback(lambda done: target._set_state(done.state))

    # -- concurrency limits and resource capacities ------------------------------

    def _refusal(self, call: TaskCall[Any]) -> State[Any] | None:
        """The Failed state of a call whose request the runner's capacity can never meet."""
        if self._capacity is None:
            return None  # the runner places requests itself
        return unsatisfiable_resources(call, self._capacity, f"the runner ({type(self.runner).__name__})")

    def _gates_for(self, task: Task[..., Any], tags: frozenset[str] | None = None) -> _Held:
        gates: _Held = []
        if task.max_concurrency is not None:
            gate = self._task_gates.get(id(task))
            if gate is None:
                gate = self._task_gates.setdefault(id(task), _Gate(task.max_concurrency))
            gates.append((gate, 1.0))
        if self._tag_gates:
            for tag in tags if tags is not None else current_tags() | task.tags:
                if tag in self._tag_gates:
                    gates.append((self._tag_gates[tag], 1.0))
        if task.resources and self._capacity is not None:
            for name, amount in task.resources.items():
                if amount:
                    gate = self._resource_gates.get(name)
                    if gate is None:
                        gate = self._resource_gates.setdefault(name, _Gate(self._capacity.get(name, 0.0)))
                    gates.append((gate, amount))
        return gates

    def _launch_gated(self, call: TaskCall[Any], gates: _Held) -> TaskFuture[Any]:
        placeholder: TaskFuture[Any] = TaskFuture(call.task_run.id, call.task_run.name)
        with self._lock:
            blocked = _blocking(gates)
            if blocked is not None:
                blocked.waiting.append((call, placeholder))
                return placeholder
            for gate, amount in gates:
                gate.in_flight += amount
            self._to_start.append((call, gates, placeholder))
        self._drain()
        return placeholder

    def _drain(self) -> None:
        with self._lock:
            if self._draining:
                return  # the thread draining now will start what was queued
            self._draining = True
        try:
            while True:
                with self._lock:
                    if not self._to_start:
                        self._draining = False
                        return
                    call, gates, placeholder = self._to_start.popleft()
                self._start_gated(call, gates, placeholder)
        except BaseException:
            with self._lock:
                self._draining = False
            raise

    def _start_gated(self, call: TaskCall[Any], gates: _Held, placeholder: TaskFuture[Any]) -> None:
        try:
            future = self.runner.submit(call)
        except RunnerError as exc:
            future = _finished(call, Cancelled(f"not started: {exc}"))
        placeholder.native = future.native
        future.add_done_callback(lambda done: self._release(gates, placeholder, done))

    def _release(self, gates: _Held, placeholder: TaskFuture[Any], done: TaskFuture[Any]) -> None:
        with self._lock:
            for gate, amount in gates:
                gate.in_flight -= amount
                if gate.in_flight < 1e-9:  # no drift left from adding and removing fractions
                    gate.in_flight = 0.0
            # Start the queued calls whose limits all have room now. A call
            # still held by another, full limit moves to that limit's queue,
            # so it is looked at again when that limit frees. The head of a
            # queue that still does not fit here stays first in line.
            for gate, _ in gates:
                while gate.waiting:
                    call, waiting_placeholder = gate.waiting[0]
                    others = self._gates_for(call.task, call.task_run.tags)
                    full = _blocking(others, gate)
                    if full is gate:
                        break
                    gate.waiting.popleft()
                    if full is not None:
                        full.waiting.append((call, waiting_placeholder))
                        continue
                    for g, amount in others:
                        g.in_flight += amount
                    self._to_start.append((call, others, waiting_placeholder))
        placeholder._set_state(done.state)
        self._drain()

    # -- the end of the flow run -------------------------------------------------

    def wait_all(self) -> None:
        """Wait for every future submitted in this flow run, including late ones."""
        seen = lanes = 0
        while seen < len(self.futures) or lanes < len(self.lanes):
            batch = self.futures[seen:]
            seen += len(batch)
            for future in batch:  # as wait() does, without its sets of every future (a million-run map)
                if not future.done():
                    future.wait()
            for lane in self.lanes[lanes:]:
                lanes += 1
                lane.wait()

    def state_names(self) -> list[str]:
        """The names of the States of every run submitted in this flow run ("Pending" for those not done).

        Read from what each future holds: a runner that keeps states on its
        cluster has given them all back by the time it is shut down.
        """
        names = [f._state_name() for f in self.futures]
        for lane in self.lanes:
            names.extend(lane.state_names())
        return names


# The upstreams of a call that has none: shared, never appended to.
_NO_UPS: list[Upstream] = []


def _done(future: TaskFuture[Any] | FutureRef | State[Any]) -> bool:
    # A State is final; a FutureRef only exists on the far side of a pickle.
    return not isinstance(future, TaskFuture) or future.done()


def _state_of(future: Any) -> Any:
    return future if isinstance(future, State) else future.state


def _finished(call: TaskCall[Any], state: Any) -> TaskFuture[Any]:
    future: TaskFuture[Any] = TaskFuture(call.task_run.id, call.task_run.name)
    future._set_state(state)
    return future

