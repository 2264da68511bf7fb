"""Reading run states back from the Dask cluster: lazily, siblings together, and all at shutdown.

::

    a run finished on the cluster ─▶ its future is marked REMOTE (its State stays on the worker)
    future.state read             ─▶ gathered, with finished siblings of its map (bounded in
                                     bytes) in one round trip; a batch's Dask future gives every
                                     call in it its State
    the runner shuts down         ─▶ every unread State is read as a header (small results
                                     only; large ones stay behind, released)

A chain A→B→C thus never moves data through the flow process: B takes A's
State on the cluster, and the flow process reads only what the flow reads.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import CancelledError
from typing import Any

from taskyard.exceptions import CrashedRunError
from taskyard.runners.base import BatchResult, Crashed, State, TaskFuture, received_state, unreadable_outcome_state
from taskyard.states import Pending, Running

__all__ = ("DaskTaskFuture", "Siblings", "States", "REMOTE", "FETCH_BATCH_BYTES", "state_for")

# Reading one result of a map gathers finished siblings too, up to this many bytes.
FETCH_BATCH_BYTES = 16_000_000
# The state of a run that finished on the cluster and has not been read yet.
REMOTE: State[Any] = Running("finished on the Dask cluster; the state is fetched when read", name="Remote")


class DaskTaskFuture(TaskFuture[Any]):
    """A TaskFuture whose State stays on the cluster until it is read."""

    __slots__ = ("_batch",)

    def __init__(self, task_run_id: str, task_run_name: str, batch: Siblings) -> None:
        super().__init__(task_run_id, task_run_name)
        self._batch = batch

    @property
    def state(self) -> State[Any]:
        state = self._state
        if state is REMOTE:
            return self._batch.states.fetch(self)
        return state if state is not None else Pending()

    def mark_remote(self) -> None:
        """The run finished on the cluster: its State is read when first asked for."""
        self._batch.remote[self.task_run_id] = self
        self._set_state(REMOTE)  # a marker for this subclass's lazy `state`, not a final state


class Siblings:
    """The futures of one submit or map: finished ones are gathered together."""

    __slots__ = ("states", "remote", "__weakref__")

    def __init__(self, states: States) -> None:
        self.states = states
        self.remote: dict[str, DaskTaskFuture] = {}


class States:
    """The runner's reader of States left on the cluster (``client`` is read when needed)."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self._groups: weakref.WeakSet[Siblings] = weakref.WeakSet()

    def group(self) -> Siblings:
        """A new group of sibling futures (one submit or map)."""
        group = Siblings(self)
        self._groups.add(group)
        return group

    def fetch(self, future: DaskTaskFuture) -> State[Any]:
        """Gather ``future``'s State, with finished siblings from its map (bounded in bytes).

        Calls that ran in one batch share one Dask future: gathering it once
        gives every one of them its State.
        """
        client = self._runner._client
        with self._lock:
            state = future._state
            if state is not REMOTE:
                return state  # type: ignore[return-value]
            batch = future._batch
            # list() first: Dask's callback thread adds to the dict meanwhile. Only
            # futures already marked done: one still being marked must keep its wake-up.
            finished = [f for f in list(batch.remote.values()) if f._state is REMOTE]
            natives = {future.native.key: future.native}
            others = {f.native.key: f.native for f in finished if f.native.key not in natives}
            if others:
                try:
                    sizes = client.nbytes(list(others), summary=False)
                except Exception:
                    sizes = {}
                budget = FETCH_BATCH_BYTES
                for key, native in others.items():
                    budget -= sizes.get(key, FETCH_BATCH_BYTES)
                    if budget < 0:
                        break
                    natives[key] = native
            take = [f for f in finished if f.native.key in natives]
            if future not in take:
                take.append(future)
            for f in take:
                batch.remote.pop(f.task_run_id, None)
            try:
                got = dict(zip(natives, client.gather(list(natives.values())), strict=True))
            except Exception:
                got = {key: _gather_one(native, future.task_run_name) for key, native in natives.items()}
            for f in take:
                f._state = received_state(state_for(f, got[f.native.key]))
            return future._state  # type: ignore[return-value]

    def release_all(self) -> None:
        """Give every finished, unread run its state; large results stay behind."""
        client = self._runner._client
        remote: dict[str, list[DaskTaskFuture]] = {}
        for batch in list(self._groups):
            for f in list(batch.remote.values()):
                remote.setdefault(f.native.key, []).append(f)
        if not remote:
            return
        headers: dict[str, Any] = {}
        if client.status == "running":
            try:
                headers = self._read_headers(list(remote))
            except Exception as exc:
                if len(remote) == 1:  # e.g. a result or exception that cannot be pickled back
                    ((key, futures),) = remote.items()
                    headers[key] = unreadable_outcome_state(futures[0].task_run_name, exc, "its Dask worker")
                else:  # find the runs whose states cannot come back
                    for key, futures in remote.items():
                        try:
                            headers.update(self._read_headers([key]))
                        except Exception as one:
                            headers[key] = unreadable_outcome_state(futures[0].task_run_name, one, "its Dask worker")
        if client.status == "running":
            for key, futures in remote.items():  # e.g. a worker died since: Dask computes it again
                if key not in headers:
                    headers[key] = _gather_one(futures[0].native, futures[0].task_run_name)
        with self._lock:
            for key, futures in remote.items():
                found = headers.get(key)
                for future in futures:
                    if future._state is REMOTE:
                        future._state = received_state(state_for(future, found)) if found is not None else Crashed(
                            f"task run {future.task_run_name!r} finished on the Dask cluster, but its state "
                            "could not be read before the runner shut down"
                        )
                    future._batch.remote.pop(future.task_run_id, None)

    def _read_headers(self, keys: list[str]) -> dict[str, Any]:
        from taskyard_dask.worker import state_headers

        headers: dict[str, Any] = {}
        for found in self._runner._client.run(state_headers, keys, on_error="return").values():
            if isinstance(found, dict):
                headers.update(found)
        return headers


def state_for(future: TaskFuture[Any], found: Any) -> State[Any]:
    """``future``'s State out of what its Dask future held (its own State, or its batch's)."""
    if isinstance(found, BatchResult):
        state = found.states.get(future.task_run_id)
        if state is None:
            return Crashed(f"task run {future.task_run_name!r} is missing from the result of its batch")
        return state
    return found  # type: ignore[no-any-return]


def _gather_one(native: Any, task_run_name: str) -> Any:
    from distributed import KilledWorker

    try:
        return native.result(timeout=60)
    except (OSError, TimeoutError, CancelledError, KilledWorker) as exc:
        # The cluster, not the run, failed: e.g. the worker holding the state died and
        # Dask's recomputation of it was lost too.
        message = f"the state of task run {task_run_name!r} could not be read from the Dask cluster: {exc!r}"
        error = CrashedRunError(message)
        error.__cause__ = exc
        return Crashed(message, exc=error)
    except Exception as exc:  # the outcome itself cannot make the trip (as on the process runner)
        return unreadable_outcome_state(task_run_name, exc, "its Dask worker")
