"""DaskTaskRunner: task calls run on a Dask cluster, dependencies resolved by Dask.

::

    submit(call) ─ upstream TaskFutures → their Dask futures (.native) ─┐
    map(calls)  ── large shared args scattered once → SharedArg ───────┤ one update-graph
                                                                       ▼ per submit / per map
                  client.submit / client.map(run_call_on_worker, call, ...)
                                                                       │ worker: engine → State
    DaskTaskFuture ◀── Dask done-callback ◀────────────────────────────┘ (State stays on the worker)
      .native = the Dask future
      finished → marked done; the State is gathered when first read (siblings of a
                 map in one round trip; taskyard_dask.reading), so a chain A→B→C
                 never moves data through the flow process
      error    → KilledWorker: the dead worker is judged (taskyard_dask.losses): the run
                 it was running is submitted again while its retries allow, else
                 Crashed; runs only queued there are placed again; an upstream's
                 loss: placed again once the upstream settles
      cancelled→ Cancelled (by us) or Crashed (scheduler connection lost)

With no ``address`` the runner starts a temporary cluster (``LocalCluster`` on
127.0.0.1 unless told otherwise) and closes it, and every process it started,
at shutdown; with an ``address`` it only connects and disconnects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from taskyard.exceptions import RunnerNotStartedError
from taskyard.runners.base import (
    Cancelled,
    Failed,
    TaskCall,
    TaskFuture,
    TaskRunner,
    check_batch_size,
    hurrying,
    set_state,
    unpicklable_argument_error,
    without_main,
)
from taskyard.runners.toolkit import (
    LogRelay,
    Outstanding,
    estimate_size,
    find_shared,
    split_upstreams,
    submit_failure_state,
    with_placeholders,
)
from taskyard.states import Crashed
from taskyard_dask.batches import DaskBatches
from taskyard_dask.entries import Entry, annotated, options_for, submit_kwargs
from taskyard_dask.losses import Losses
from taskyard_dask.reading import DaskTaskFuture, States
from taskyard_dask.resources import ClusterResources
from taskyard_dask.starting import Start, cluster_kwargs, load_class, short_debug_logs

__all__ = ("DaskTaskRunner", "DaskTaskFuture")

logger = logging.getLogger("taskyard.dask")

# Shared arguments at least this large (dask.sizeof) are scattered once per map.
SHARE_MIN_BYTES = 100_000
# An interrupted start is left this long to finish before shutdown closes what it started.
START_FINISH_SECONDS = 120
# The name distributed's Nanny gives the worker processes it starts (and restarts).
NANNY_PROCESS_NAME = "Dask Worker process (from Nanny)"


class DaskTaskRunner(TaskRunner[TaskFuture[Any]]):
    """Runs task calls on a Dask cluster: an existing one, or a temporary one it starts.

    Args:
        address: Address of a running scheduler (``"tcp://127.0.0.1:8786"``).
            The runner connects to it and leaves the cluster running.
        cluster_class: Without ``address``: the cluster to start, as a class
            or a ``"module.Class"`` string; ``distributed.LocalCluster`` by default.
        cluster_kwargs: Keyword arguments for ``cluster_class``. A LocalCluster
            binds 127.0.0.1 (dashboard on a free loopback port) and treats a
            task whose worker dies as lost at once (``allowed_failures=0``; the
            task's own ``retries`` decide whether it runs again) unless told otherwise.
        adapt_kwargs: Make the temporary cluster adaptive: ``cluster.adapt(**adapt_kwargs)``.
        client_kwargs: Keyword arguments for ``distributed.Client``.
        batch_size: Calls of a map per Dask task: None (default) adapts it to
            how long calls take (see docs/batching.md), ``1`` gives every call
            its own Dask task, ``N`` fixes it. A task's own ``batch_size`` wins.

    After ``start()``, ``client`` is the connected ``distributed.Client`` and
    ``cluster`` the cluster the runner started (None with ``address``).

    A task's ``resources`` request becomes Dask worker resources (``gpu`` →
    ``GPU``; see ``taskyard_dask.resources``); a request no worker can ever
    meet ends Failed at once.
    """

    name = "dask"
    requires_pickling = True
    resolves_dependencies = True

    def __init__(
        self,
        address: str | None = None,
        cluster_class: type[Any] | str | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        adapt_kwargs: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if address is not None and (cluster_class is not None or cluster_kwargs or adapt_kwargs):
            raise ValueError(
                "DaskTaskRunner takes either address= (connect to a running scheduler) or "
                "cluster_class/cluster_kwargs/adapt_kwargs (start a temporary cluster), not both"
            )
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt_kwargs = dict(adapt_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self.batch_size = check_batch_size(batch_size, "DaskTaskRunner")
        self._batching = DaskBatches(self)
        self._thread_count = (0, 0.0)
        self.dashboard_link: str | None = None
        self._client: Any = None
        self._cluster: Any = None
        self._future_class: Any = None
        self._killed_worker: Any = None
        self._outstanding: Outstanding[Entry] = Outstanding(lambda entry: entry.future)
        self._states = States(self)
        self._losses = Losses(self)
        self._logs = LogRelay()
        self._shared: dict[int, tuple[Any, Any]] = {}
        self._log_name = f"taskyard-logs-{os.urandom(4).hex()}"
        self._resources: ClusterResources | None = None
        self._release_main: Callable[[], None] | None = None
        self._starting: Start | None = None
        self._started_with: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of the started runner."""
        if self._client is None:
            raise RunnerNotStartedError(f"{self!r} has no client: start it first (`with runner:`)")
        return self._client

    @property
    def cluster(self) -> Any:
        """The cluster this runner started, or None (``address`` given, or not started)."""
        return self._cluster

    def setup(self) -> None:
        import distributed

        self._future_class = distributed.Future
        self._killed_worker = distributed.KilledWorker
        # Built in a helper thread: Ctrl-C meanwhile interrupts only the wait, and
        # shutdown() lets the start finish before it closes what was started.
        self._starting = Start(self._start_backend)
        self._starting.run()
        self._starting = None
        self.dashboard_link = self._find_dashboard()
        if self.dashboard_link:
            logger.debug("Dask dashboard: %s", self.dashboard_link)  # the flow run's first line shows it

    def _start_backend(self) -> None:
        import distributed

        client_kwargs = {"set_as_default": False, **self.client_kwargs}
        try:
            with short_debug_logs():
                self._connect(distributed, client_kwargs)
            self._forward_logs()
            self._losses.listen(self._client, f"{self._log_name}-starts")
            if self._cluster is not None:
                from taskyard_dask.owned import OwnedWorkers

                self._client.register_plugin(OwnedWorkers(), name=f"taskyard-owned-{self._log_name}")
            self._resources = ClusterResources(self._client, self._cluster, bool(self.adapt_kwargs))
        except BaseException:
            self._close_backend()
            raise

    def _connect(self, distributed: Any, client_kwargs: dict[str, Any]) -> None:
        """Connect the client to ``address``, or start the cluster and connect to it."""
        if self.address is not None:
            self._client = distributed.Client(self.address, **client_kwargs)
            return
        cls = load_class(self.cluster_class) if self.cluster_class is not None else distributed.LocalCluster
        # Worker processes leave the flow script's __main__ alone: a script
        # without an `if __name__ == "__main__":` guard runs once.
        self._release_main = without_main(NANNY_PROCESS_NAME)
        from taskyard_dask.owned import deaf_children

        deaf_children()  # this helper thread: the worker processes spawned from it start deaf to Ctrl-C
        self._started_with = cluster_kwargs(cls, self.cluster_kwargs)
        self._cluster = cls(**self._started_with)
        if self.adapt_kwargs:
            self._cluster.adapt(**self.adapt_kwargs)
        self._client = distributed.Client(self._cluster, **client_kwargs)

    def _find_dashboard(self) -> str | None:
        services = self._client.scheduler_info().get("services", {})
        if "dashboard" not in services:
            return None
        if self._cluster is not None and str(self._started_with.get("dashboard_address", "")).startswith("127.0.0.1:"):
            # Dask names the host it thinks the scheduler has (a machine address for an
            # in-process cluster), but this dashboard listens on loopback only.
            from distributed.utils import format_dashboard_link

            return str(format_dashboard_link("127.0.0.1", services["dashboard"]))  # type: ignore[no-untyped-call]
        return str(self._client.dashboard_link)

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        if not self.begin_shutdown():
            return
        if self._starting is not None and not self._starting.finish(START_FINISH_SECONDS):
            logger.warning("the Dask cluster was still starting after %d s; leaving it to Dask's own clean-up", START_FINISH_SECONDS)
            return
        if self._client is not None:
            if wait and not cancel_pending:
                self._wait_outstanding()
            else:
                self._cancel_outstanding()
            self._states.release_all()
        self._close_backend(stop_now=cancel_pending or not wait)

    def _wait_outstanding(self) -> None:
        while queued := self._batching.pending():
            for entry in queued:
                entry.future.wait()
        self._outstanding.wait_all()

    def _cancel_outstanding(self) -> None:
        for entry in self._batching.cancel():
            set_state(entry.future, Cancelled("the flow run was cancelled before this run started"))
        entries = self._outstanding.cancel_all()
        natives = list({e.native.key: e.native for e in entries if e.native is not None}.values())
        if natives:
            try:
                self._client.cancel(natives, force=True)
            except Exception as exc:  # the scheduler may be gone already
                logger.debug("cancelling %d Dask futures failed: %r", len(natives), exc)

    def _close_backend(self, stop_now: bool = False) -> None:
        """Release the client, and close the cluster if the runner started it.

        ``stop_now`` (the runs were cancelled): the worker processes of our
        own cluster are killed first — Dask cannot interrupt a running task,
        and closing a worker that runs one waits seconds before killing it
        anyway. After a second Ctrl-C (:func:`hurrying`) every wait is short.
        """
        from taskyard_dask.owned import muted

        client, cluster = self._client, self._cluster
        with muted() if cluster is not None and stop_now else contextlib.nullcontext():
            self._close_client_and_cluster(client, cluster, stop_now)
        if self._release_main is not None:
            self._release_main()
        self._shared.clear()

    def _close_client_and_cluster(self, client: Any, cluster: Any, stop_now: bool) -> None:
        from taskyard_dask.owned import kill_worker_processes

        hurry = hurrying()
        if cluster is not None and stop_now:
            kill_worker_processes(cluster)
        if client is not None:
            # With the scheduler gone, talking to it only waits for connect
            # timeouts (~30 s): skip straight to closing the client.
            connected = client.status == "running"
            if connected and cluster is None:  # a cluster we did not start: take our log forwarder back
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(self._log_name)
            if connected:
                with contextlib.suppress(Exception):
                    client.unsubscribe_topic(self._log_name)
            with contextlib.suppress(Exception):
                client.close(timeout=10 if connected and not hurry else 2)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=5 if hurry else 30)

    # -- logs --------------------------------------------------------------------------

    def _forward_logs(self) -> None:
        from taskyard_dask.worker import LogForwarder

        level = logging.getLogger("taskyard").getEffectiveLevel()
        self._client.subscribe_topic(self._log_name, self._on_log_event)
        self._client.register_plugin(LogForwarder(self._log_name, level, os.getpid()), name=self._log_name)

    def _on_log_event(self, event: tuple[float, dict[str, Any]]) -> None:
        self._logs.deliver(dict(event[1]))

    # -- submission -------------------------------------------------------------------

    def resource_capacity(self) -> None:
        """None: requests become Dask worker resources (see ``taskyard_dask.resources``)."""
        return None

    def submit(self, call: TaskCall[Any]) -> DaskTaskFuture:
        self.check_open()
        future = DaskTaskFuture(call.task_run.id, call.task_run.name, self._states.group())
        self._logs.watch(call)
        if not self._refused(call, future):
            self._place(Entry(call, future, self._options(call), ()))
        return future

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[DaskTaskFuture]:  # type: ignore[override]
        self.check_open()
        if not calls:
            return []
        group = self._states.group()
        futures = every = [DaskTaskFuture(c.task_run.id, c.task_run.name, group) for c in calls]
        for call in {id(c.flow_run): c for c in calls}.values():
            self._logs.watch(call)
        if any(c.task.resources for c in calls):  # the calls no worker can run end here
            kept = [i for i, c in enumerate(calls) if not self._refused(c, futures[i])]
            calls, futures = [calls[i] for i in kept], [futures[i] for i in kept]
        sizers = {id(c.task): self._batching.sizer(c.task) for c in calls}
        if any(s.fixed != 1 for s in sizers.values()):
            self._map_batched(calls, futures, sizers)
            return every
        plain = [i for i, c in enumerate(calls) if not c.upstreams]
        if len(plain) < len(calls):  # calls with upstreams go one by one
            for call, future in zip(calls, futures, strict=True):
                if call.upstreams:
                    self._place(Entry(call, future, self._options(call), ()))
        plain_calls, shared = self._share([calls[i] for i in plain])
        options = self._options(plain_calls[0]) if plain_calls else {}
        entries = [Entry(call, futures[i], options, shared) for i, call in zip(plain, plain_calls, strict=True)]
        if entries:
            self._send_batch(entries)
        return every

    def _map_batched(self, calls: Sequence[TaskCall[Any]], futures: list[DaskTaskFuture], sizers: Mapping[int, Any]) -> None:
        """Queue the calls for adaptive batches, one queue per task (see taskyard_dask.batches).

        One pass, no index of the calls, no copy of the queue: a million-call map is all here at once.
        """
        plain = [c for c in calls if not c.upstreams] if any(c.upstreams for c in calls) else calls
        plain_calls, shared = self._share(plain)
        swapped = iter(plain_calls)  # in the order of `plain`
        by_task: dict[int, deque[Entry]] = {}  # handed to the feeder, which keeps them as they are
        options = self._options(calls[0])
        for call, future in zip(calls, futures, strict=True):
            entry = Entry(call, future, options, ()) if call.upstreams else Entry(next(swapped), future, options, shared)
            queue = by_task.get(id(call.task))
            if queue is None:
                queue = by_task[id(call.task)] = deque()
            queue.append(entry)
        for task_id, entries in by_task.items():
            self._batching.feeder.add(entries, sizers[task_id])

    def _threads(self) -> int:
        """The threads of the cluster's workers (read at most once a second)."""
        count, read = self._thread_count
        now = time.monotonic()
        if now - read > 1.0 or not count:
            try:
                workers = self._client.scheduler_info().get("workers", {})
                count = sum(int(w.get("nthreads", 1)) for w in workers.values()) or count or 1
            except Exception:
                count = count or 1
            self._thread_count = (count, now)
        return count

    def _refused(self, call: TaskCall[Any], future: DaskTaskFuture) -> bool:
        """End ``future`` at once if no worker can ever meet the call's resource request."""
        refused = self._resources.refusal(call) if self._resources is not None else None
        if refused is not None:
            set_state(future, refused)
        return refused is not None

    def _options(self, call: TaskCall[Any]) -> Mapping[str, Any]:
        options = options_for(call)
        return self._resources.options(call, options) if self._resources is not None else options

    def _share(self, calls: Sequence[TaskCall[Any]]) -> tuple[Sequence[TaskCall[Any]], tuple[Any, ...]]:
        """Scatter large parameter values that every call shares; put placeholders in their place."""
        from dask.sizeof import sizeof

        names = find_shared(calls, lambda v: max(sizeof(v), estimate_size(v)), SHARE_MIN_BYTES)
        if not names:
            return calls, ()
        shared = tuple(self._scatter(calls[0].parameters[name]) for name in names)
        return with_placeholders(calls, names), shared

    def _scatter(self, value: Any) -> Any:
        # Kept by identity for the runner's life, so later maps reuse the copy on the cluster.
        hit = self._shared.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        native = self._client.scatter([value], broadcast=False, hash=False)[0]
        self._shared[id(value)] = (value, native)
        return native

    def _place(self, entry: Entry) -> None:
        """Submit ``entry`` with its upstreams as Dask futures, or as states when they have none."""
        ids, values, waiting = split_upstreams(entry.call, lambda up: self._usable(up.native))
        if waiting:  # a future of another runner, or one being submitted again
            self._outstanding.defer(entry, waiting, self._place)
            return
        values.extend(entry.shared)
        from taskyard_dask.worker import run_call_on_worker, run_marked_call_on_worker

        # A run once lost with a worker, maybe before it started, reports its start (taskyard_dask.losses).
        run, head = (run_marked_call_on_worker, (self._losses.topic,)) if entry.marked else (run_call_on_worker, ())
        try:
            with annotated(entry.options):
                native = self._client.submit(
                    run, *head, entry.call, tuple(ids), *values, key=entry.key, pure=False, **submit_kwargs(entry.options)
                )
        except Exception as exc:
            set_state(entry.future, submit_failure_state(entry.call, exc, "a Dask worker"))
            return
        self._track(entry, native)

    def _send_batch(self, entries: list[Entry]) -> None:
        from taskyard_dask.worker import run_mapped_call_on_worker

        shared = entries[0].shared
        options = entries[0].options
        extra = {"shared": shared} if shared else {}
        try:
            with annotated(options):
                natives = self._client.map(
                    run_mapped_call_on_worker,
                    [e.call for e in entries],
                    key=[e.key for e in entries],
                    pure=False,
                    **submit_kwargs(options),
                    **extra,
                )
        except Exception as exc:
            if len(entries) == 1:
                set_state(entries[0].future, submit_failure_state(entries[0].call, exc, "a Dask worker"))
                return
            good = []
            for entry in entries:  # find the calls that will not pickle; send the rest
                try:
                    cloudpickle.dumps(entry.call)
                except Exception:
                    set_state(entry.future, Failed(unpicklable_argument_error(entry.call, "a Dask worker")))
                else:
                    good.append(entry)
            if len(good) == len(entries):
                for entry in entries:
                    set_state(entry.future, submit_failure_state(entry.call, exc, "a Dask worker"))
            elif good:
                self._send_batch(good)
            return
        for entry, native in zip(entries, natives, strict=True):
            self._track(entry, native)

    def _usable(self, native: Any) -> Any:
        if (
            isinstance(native, self._future_class)
            and native.client is self._client
            and native.status not in ("error", "cancelled", "lost")
        ):
            return native
        return None

    def _track(self, entry: Entry, native: Any) -> None:
        entry.native = native
        entry.future.native = native
        self._outstanding.add(native.key, entry)
        native.add_done_callback(self._on_done)

    # -- completion (Dask's callback thread) ---------------------------------------------

    def _on_done(self, native: Any) -> None:
        entry = self._outstanding.pop(native.key)
        if entry is None or entry.native is not native:
            return
        future, status = entry.future, native.status
        if status == "finished":
            future.mark_remote()
        elif status == "error":
            self._losses.on_error(entry, native)
        elif status == "cancelled" and self._outstanding.closing:
            set_state(future, Cancelled("the flow run was cancelled before this run finished"))
        else:
            message = (
                f"Dask dropped task run {future.task_run_name!r} ({status}): "
                "the connection to the scheduler was lost, or the cluster went away"
            )
            set_state(future, Crashed(message, run_count=entry.losses + 1))
