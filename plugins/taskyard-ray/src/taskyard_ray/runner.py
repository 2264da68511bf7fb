"""RayTaskRunner: task calls run on Ray, dependencies resolved by Ray.

::

    submit(call) ─ upstream TaskFutures → their ObjectRefs (.native) ──┐
    map(calls)  ── large shared args ray.put once → SharedArg ────────┤ one .remote() per call,
                                                                      ▼ in one pass
      fn(task, flow run).options(resources...).remote(params, run, ids, *refs) → (header, state)
      (fn: one remote function per task, exported once)               │ worker: engine → State
    RemoteTaskFuture ◀── settler thread ◀── header ready (arrivals) ◀──┘ (the State stays in Ray)
      .native = the state ObjectRef (what downstream runs are given)
      header ready → marked done; the State is fetched when first read (finished
                     siblings of a map in the same ray.get), so a chain A→B→C never
                     moves data through the flow process
      header error → a worker or node lost: placed again while the task's retries
                     allow, else Crashed; an upstream's loss: placed again once the
                     upstream settles (it then ends NotReady or runs on the retry)

A map's ready calls go in adaptive batches (one Ray task for many calls,
one State per call; see :mod:`taskyard_ray.batches`) unless ``batch_size=1``.
How the runner hears that a header arrived: :mod:`taskyard_ray.arrivals`;
how a State left in Ray is read later: :mod:`taskyard_ray.lazy`.

Each remote call returns two objects: a header, read at once — the State
itself when its result is small, else the State without its result — and
the full State, left in Ray until someone reads it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from taskyard.runners.base import (
    BatchSizer,
    Cancelled,
    CrashedRunError,
    State,
    TaskCall,
    TaskFuture,
    TaskRunner,
    check_batch_size,
    hurrying,
    received_state,
    set_state,
    unreadable_outcome_state,
)
from taskyard.runners.toolkit import (
    Outstanding,
    ReleasedResult,
    RemoteTaskFuture,
    estimate_size,
    find_shared,
    lose_attempt,
    lost_state,
    split_upstreams,
    submit_failure_state,
    with_placeholders,
)
from taskyard_ray.arrivals import Arrivals, Arrived
from taskyard_ray.batches import RayBatches, Sent
from taskyard_ray.capacity import Capacity
from taskyard_ray.connection import CLIENT_PREFIX, Connection, attach, release
from taskyard_ray.functions import RemoteFunctions
from taskyard_ray.lazy import LazyStates, Siblings
from taskyard_ray.logs import LogStream
from taskyard_ray import wire
from taskyard_ray.options import current_ray_options, remote_options
from taskyard_ray.watchdog import HeadWatch

__all__ = ("RayTaskRunner",)

logger = logging.getLogger("taskyard.ray")

# Shared arguments at least this large (estimated) are put in Ray's object store once per map.
SHARE_MIN_BYTES = 100_000
# A run whose upstreams keep being lost is placed again at most this often.
_MAX_PLACEMENTS = 20
# With runs outstanding and none finishing, the settler checks this often that Ray is still there.
_HEALTH_CHECK_S = 2.0
# How long a shutdown waits for each of its steps after a second Ctrl-C.
_HURRIED_WAIT_S = 1.0
# Of a batched map, this many calls per CPU of the cluster are made ready and sent first.
_FIRST_CALLS_PER_CPU = 8
_FIRST_BATCH = 2


class _Entry:
    """A call on its way through Ray (kept to place it again)."""

    __slots__ = (
        "call", "future", "batch", "options", "shared", "header", "key", "seq", "losses", "placements", "upstream_refs",
    )  # fmt: skip

    def __init__(
        self, call: TaskCall[Any], future: RemoteTaskFuture, batch: Siblings, options: dict[str, Any], shared: tuple[Any, ...]
    ) -> None:
        self.call = call
        self.future = future
        self.batch = batch
        self.options = options
        self.shared = shared
        self.header: Any = None  # the header ObjectRef while placed (its batch's, in a batch)
        self.key: Any = None  # what the runner tracks it under while placed: the header, or (header, index)
        self.seq = 0
        self.losses = 0
        self.placements = 0
        self.upstream_refs: tuple[Any, ...] = ()


class RayTaskRunner(TaskRunner[TaskFuture[Any]]):
    """Runs task calls on Ray: a running cluster, the Ray of this process, or a local one it starts.

    Args:
        address: A running cluster to connect to (``"127.0.0.1:6379"``,
            ``"auto"``, or through Ray Client ``"ray://HOST:10001"``): the
            runner connects, and disconnects at exit,
            leaving the cluster running. Without it, the runner starts a
            fresh single-node Ray bound to 127.0.0.1 and shuts it down at
            exit. Either way, if Ray is already initialised in this process
            (a notebook, a Ray job, an enclosing flow's runner) the runner
            uses it and leaves it alone.
        init_kwargs: Keyword arguments for ``ray.init`` (``num_cpus``,
            ``object_store_memory``, ``runtime_env``, ...). A local Ray gets
            200 MB of object store and no dashboard unless told otherwise.
        batch_size: Calls of a map per Ray task: None (default) adapts it to
            how long calls take (see docs/batching.md), ``1`` gives every call
            its own Ray task, ``N`` fixes it. A task's own ``batch_size`` wins.

    After ``start()``, ``connection`` says whether the runner started Ray
    (``connection.started``) and the cluster's address.
    """

    name = "ray"
    requires_pickling = True
    resolves_dependencies = True
    supports_cancel_running = True

    def __init__(
        self, address: str | None = None, init_kwargs: Mapping[str, Any] | None = None, batch_size: int | None = None
    ) -> None:
        init_kwargs = dict(init_kwargs or {})
        if "address" in init_kwargs:
            raise ValueError("pass the cluster address as RayTaskRunner(address=...), not in init_kwargs")
        if address is not None and (not isinstance(address, str) or address.rstrip("/") == CLIENT_PREFIX.rstrip("/")):
            raise ValueError(
                f"RayTaskRunner(address={address!r}): pass a cluster address such as '10.0.0.1:6379', 'auto', "
                "or a Ray Client address 'ray://10.0.0.1:10001'"
            )
        self.address = address
        self.init_kwargs = init_kwargs
        self.batch_size = check_batch_size(batch_size, "RayTaskRunner")
        self.connection: Connection | None = None
        self._ray: Any = None
        self._capacity: Capacity | None = None
        self._logs: LogStream | None = None
        self._functions: RemoteFunctions | None = None
        self._outstanding: Outstanding[_Entry] = Outstanding(lambda entry: entry.future)
        self._arrivals: Arrivals[_Entry | Sent] | None = None
        self._stopping = False
        self._states: LazyStates | None = None
        self._bad: set[Any] = set()
        self._shared: dict[int, tuple[Any, Any]] = {}
        self._seq = itertools.count()
        self._head_watch: HeadWatch | None = None
        self._head_lost: str | None = None  # why, once the head of a joined cluster was lost
        self._batching = RayBatches(self)

    # -- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        import ray

        self._ray = ray
        self.connection = attach(self.address, self.init_kwargs)
        try:
            self._capacity = Capacity(ray)
            self._states = LazyStates(ray)
            self._logs = LogStream.acquire(ray)
            self._functions = RemoteFunctions(ray, self._logs.name)
            callbacks = "future" if self.connection.client is not None else "ready"  # Ray Client: no _on_ready
            self._arrivals = Arrivals(ray, self._settle, self._ray_is_there, callbacks, _HEALTH_CHECK_S).start()
            self._watch_head(self.connection)
        except BaseException:  # undo what started, so no thread of the runner's is left in a Ray call
            if self._arrivals is not None:
                self._arrivals.stop(timeout=_HURRIED_WAIT_S)
            if self._logs is not None:
                self._logs.release(close=self.connection.owned, hurry=True)
            release(self.connection)
            raise

    def _watch_head(self, connection: Connection) -> None:
        """A cluster's head can be lost: watch it (taskyard_ray.watchdog) unless the runner started Ray here.

        Through Ray Client the watch probes the client server (on the head;
        the GCS need not be reachable from here). If Ray does not say which
        client server this process uses, nothing is watched: Ray Client
        fails every call itself once its connection stays broken (30 s).
        """
        if connection.started or connection.client == "":
            return
        target, server = (connection.address, "GCS") if connection.client is None else (connection.client, "Ray Client server")
        self._head_watch = HeadWatch(target, lambda: bool(self._outstanding.entries()), self._on_head_lost, server=server).start()

    def resource_capacity(self) -> None:
        """None: Ray places resource requests itself (each remote call carries the run's request)."""
        return None

    def _cpus(self) -> int:
        """The CPUs of the cluster's alive nodes (read again every few seconds): how many batches run at once."""
        if self._capacity is None:
            return 1
        return max(1, int(sum(node.get("cpu", 0.0) for node in self._capacity.nodes())))

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        if not self.begin_shutdown():
            return
        if self._functions is not None:
            if wait and not cancel_pending:
                while queued := self._batching.feeder.queued():  # calls still waiting for their batch
                    for entry in queued:
                        entry.future.wait()
                self._outstanding.wait_all()
            else:
                self._cancel_outstanding()
        # After a second Ctrl-C (hurrying()) every wait below is short; each step still happens.
        self._stopping = True
        if self._head_watch is not None:
            self._head_watch.stop()
        if self._arrivals is not None:
            # With the head lost, the settler may be stuck in a call to the cluster until Ray ends the process.
            self._arrivals.stop(timeout=_HURRIED_WAIT_S if hurrying() or self._head_lost is not None else 10)
        if self._states is not None:
            self._states.release()
        self._shared.clear()
        if self._functions is not None:
            self._functions.clear()
        if self._logs is not None:  # every record of this runner's runs delivered before the flow run ends
            self._logs.release(close=self.connection is not None and self.connection.owned, hurry=hurrying())
        if self.connection is not None:
            release(self.connection)

    def _cancel_outstanding(self) -> None:
        for entry in self._batching.feeder.cancel():
            set_state(entry.future, Cancelled("the flow run was cancelled before this run started"))
        entries = self._outstanding.cancel_all()
        headers = {entry.header: entry for entry in entries if entry.header is not None}  # a batch's once
        for header, entry in headers.items():
            try:  # force: a task in code that ignores KeyboardInterrupt still stops
                self._ray.cancel(header, force=True)
            except Exception as exc:  # finished meanwhile, or Ray is gone
                logger.debug("ray.cancel of %r failed: %r", entry.call.task_run.name, exc)

    # -- submission -----------------------------------------------------------------------

    def submit(self, call: TaskCall[Any]) -> RemoteTaskFuture:
        self.check_open()
        if self._logs is not None:
            self._logs.watch(call)
        entry = self._entry(call, Siblings(), self._options_for(call), ())
        self._place(entry)
        return entry.future

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[RemoteTaskFuture]:  # type: ignore[override]
        self.check_open()
        if not calls:
            return []
        batch = Siblings()
        if self._logs is not None:
            for flow_call in {id(c.flow_run): c for c in calls}.values():
                self._logs.watch(flow_call)
        options = self._options_for(calls[0])
        plain = [c for c in calls if not c.upstreams]
        names = find_shared(plain, estimate_size, SHARE_MIN_BYTES)
        shared: tuple[Any, ...] = ()
        swapped: dict[int, TaskCall[Any]] = {}
        if names:
            shared = tuple(self._put_once(plain[0].parameters[name]) for name in names)
            swapped = {id(c): s for c, s in zip(plain, with_placeholders(plain, names), strict=True)}
        sizers = {id(task): self._batching.sizers(task) for task in {id(c.task): c.task for c in calls}.values()}
        unbatched = self._head_lost is not None or all(s.fixed == 1 for s in sizers.values())
        # The first calls go out before the rest of the map is made ready, in small batches: the
        # first results of a large map arrive at once (an entry costs ~10 µs; 20,000 of them, 0.2 s).
        first = len(calls) if unbatched else min(len(calls), _FIRST_CALLS_PER_CPU * self._cpus())
        entries: list[_Entry] = []
        for call in calls:
            if id(call) in swapped:
                entry = self._entry(swapped[id(call)], batch, options, shared)
            else:
                entry = self._entry(call, batch, options if not call.upstreams else self._options_for(call), ())
            entries.append(entry)
            if unbatched:
                self._place(entry)
            elif len(entries) == first:  # batches of _FIRST_BATCH; they teach the task's sizer nothing
                self._feed(entries, {k: v if v.fixed else BatchSizer(_FIRST_BATCH) for k, v in sizers.items()})
        if not unbatched and len(entries) > first:
            self._feed(entries[first:], sizers)
        return [entry.future for entry in entries]

    def _feed(self, entries: list[_Entry], sizers: dict[int, BatchSizer]) -> None:
        """Queue ``entries`` for adaptive batches, one queue per task (see taskyard_ray.batches)."""
        by_task: dict[int, list[_Entry]] = {}
        for entry in entries:
            by_task.setdefault(id(entry.call.task), []).append(entry)
        for task_id, queued in by_task.items():
            self._batching.feeder.add(queued, sizers[task_id])

    def _entry(self, call: TaskCall[Any], batch: Siblings, options: dict[str, Any], shared: tuple[Any, ...]) -> _Entry:
        assert self._states is not None
        future = RemoteTaskFuture(call.task_run.id, call.task_run.name, self._states.fetch)
        return _Entry(call, future, batch, options, shared)

    def _options_for(self, call: TaskCall[Any]) -> dict[str, Any]:
        return remote_options(call.task.resources, current_ray_options())

    def _put_once(self, value: Any) -> Any:
        # Kept by identity for the runner's life, so later maps reuse the copy in Ray.
        hit = self._shared.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        ref = self._ray.put(value)
        self._shared[id(value)] = (value, ref)
        return ref

    def _native_of(self, upstream: TaskFuture[Any]) -> Any:
        native = upstream.native
        if isinstance(native, self._ray.ObjectRef) and native not in self._bad:
            return native
        return None

    def _place(self, entry: _Entry) -> None:
        """Submit ``entry`` with its upstreams as ObjectRefs, or as states when they have none."""
        call = entry.call
        if self._head_lost is not None:  # nothing can run on a cluster without its head
            set_state(entry.future, lost_state(call, entry.losses + 1, self._head_lost))
            return
        ids, values, waiting = split_upstreams(call, self._native_of)
        if waiting:  # held back by a limit, of another runner, or being placed again
            self._outstanding.defer(entry, waiting, self._place)
            return
        assert self._capacity is not None
        refusal = self._capacity.refusal(entry.options, call.task_run.name)
        if refusal is not None:
            set_state(entry.future, refusal)
            return
        entry.upstream_refs = tuple(v for v in values if isinstance(v, self._ray.ObjectRef))
        values.extend(entry.shared)
        try:
            payload = wire.dumps((call.parameters, call.task_run, call.upstreams, tuple(ids)))
            assert self._functions is not None
            header, state_ref = self._functions.get(call, entry.options).remote(payload, *values)
        except Exception as exc:
            set_state(entry.future, submit_failure_state(call, exc, "a Ray worker"))
            return
        entry.header = entry.key = header
        entry.seq = next(self._seq)
        entry.future.native = state_ref
        self._outstanding.add(header, entry)
        if self._head_lost is not None and self._outstanding.pop(header) is not None:  # lost meanwhile
            set_state(entry.future, lost_state(call, entry.losses + 1, self._head_lost))
            return
        # Ray calls back (on its own thread) once the header is in; the settler takes it from there.
        assert self._arrivals is not None
        self._arrivals.when_ready(header, entry)

    # -- completion (the watcher thread) ----------------------------------------------------

    def _ray_is_there(self) -> bool:
        """False (and every outstanding run Crashed) when Ray itself went away."""
        if self._stopping:
            return False
        entries = self._outstanding.entries()
        if not entries:
            return True
        try:
            self._ray.wait([entries[0].header], num_returns=1, timeout=0, fetch_local=False)
        except (Exception, SystemExit) as exc:  # SystemExit: Ray was shut down in this process
            if self._stopping:
                return False
            logger.error("the connection to Ray was lost: %r", exc)
            self._lose_everything(exc)
            return False
        return True

    def _settle(self, arrived: list[tuple[_Entry | Sent, Arrived]]) -> None:
        """The settler thread: complete the runs whose headers arrived."""
        arrived.sort(key=lambda item: item[0].seq)  # upstreams before the runs that depend on them
        for entry, done in arrived:
            if isinstance(entry, Sent):
                self._batching.settle(entry, done)
                continue
            if self._outstanding.pop(entry.header) is None:
                continue  # cancelled meanwhile
            error = done.exception()
            header = wire.as_state(done.result()) if error is None else error
            if isinstance(header, State):
                self._finished(entry, header)
            else:
                self._lose_ref(entry.future.native)
                self._on_error(entry, header)

    def _lose_ref(self, ref: Any) -> None:
        """``ref`` (a state ref) holds an error: downstream runs must not be handed it."""
        self._bad.add(ref)
        _consume(self._ray, ref)

    def _finished(self, entry: _Entry, header: State[Any]) -> None:
        future = entry.future
        if not isinstance(header.data, ReleasedResult):
            set_state(future, header)
            return
        assert self._states is not None
        self._states.keep(future, received_state(header), entry.batch)  # its log records, now

    def _on_error(self, entry: _Entry, error: BaseException, charge: bool = True) -> None:
        """Ray failed ``entry``'s run: place it again, or end it.

        ``charge`` False: the run was one of a batch lost as a whole, so its
        loss is not its own; it is placed again alone, without losing an attempt.
        """
        errors = self._ray.exceptions
        call = entry.call
        unsettled = [
            u.future for u in call.upstreams
            if isinstance(u.future, TaskFuture) and u.future.native in entry.upstream_refs and not u.future.done()
        ]
        if unsettled and not self._outstanding.closing:
            # Ray failed this run for an upstream whose own news has not arrived yet: judge after it.
            self._outstanding.defer(entry, unsettled, lambda again: self._on_error(again, error))
            return
        if any(ref in self._bad for ref in entry.upstream_refs) and not self._outstanding.closing:
            # An upstream was lost: place this run again once that one settles.
            entry.placements += 1
            if entry.placements <= _MAX_PLACEMENTS:
                entry.future.native = None
                self._place(entry)
                return
        if isinstance(error, errors.TaskCancelledError) or self._outstanding.closing:
            set_state(entry.future, Cancelled("the flow run was cancelled before this run finished"))
            return
        if not charge:
            entry.future.native = None
            self._place(entry)
            return
        if isinstance(error, errors.RayTaskError):
            # run_on_ray never raises: Ray could not ship the State back, or the call in.
            set_state(entry.future, unreadable_outcome_state(entry.future.task_run_name, error, "its Ray worker"))
            return
        entry.losses += 1
        if lose_attempt(call, entry.losses, self._outstanding.closing):
            logger.warning(
                "Ray lost the worker running task run %r (%s); running it again (retry %d of %d)",
                call.task_run.name, type(error).__name__, entry.losses, call.task.retries,
            )
            entry.future.native = None
            self._place(entry)
            return
        set_state(entry.future, lost_state(call, entry.losses, f"Ray lost the worker ({type(error).__name__})", error))

    def _lose_everything(self, exc: BaseException, what: str = "the connection to Ray was lost") -> None:
        for entry in self._outstanding.entries():
            if self._outstanding.pop(entry.key) is None:
                continue
            set_state(entry.future, lost_state(entry.call, entry.losses + 1, what, exc))

    def _on_head_lost(self, message: str) -> None:
        """The head watch gave up on the cluster's head: every run, outstanding or to come, ends Crashed."""
        logger.error("%s; the runs on that cluster end Crashed", message)
        self._head_lost = message
        self._lose_everything(CrashedRunError(message), message)
        # Calls still waiting for a batch would wait for ever: the batches in flight never end.
        for entry in self._batching.feeder.cancel():
            set_state(entry.future, lost_state(entry.call, entry.losses + 1, message, CrashedRunError(message)))


def _consume(ray: Any, ref: Any) -> None:
    """Read the error a failed run's state ref holds, so Ray does not report it as unhandled."""
    try:
        ray.get(ref, timeout=0)
    except Exception:
        pass
