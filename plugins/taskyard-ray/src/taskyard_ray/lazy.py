"""Finished runs whose State stayed in Ray: read when first asked for, with their finished siblings.

A run with a large result sends back only a header (its State without the
result); the full State stays in Ray's object store. The runner marks the
future finished and keeps it here. When the flow reads one (``result()``,
``state``), :meth:`LazyStates.fetch` gets it with up to :data:`FETCH_BATCH`
finished, unread siblings of the same submit or map in one ``ray.get``.
When the runner shuts down, :meth:`LazyStates.release` gives every unread
run its header: the large result is released with the flow run, and its
``result()`` says so.
"""

from __future__ import annotations

import threading
from typing import Any

from taskyard.runners.base import Crashed, CrashedRunError, State
from taskyard.runners.toolkit import RemoteTaskFuture
from taskyard_ray.batches import pick

__all__ = ("LazyStates", "Siblings", "FETCH_BATCH")

# Reading one result of a map fetches finished siblings too, up to this many.
FETCH_BATCH = 1000


class Siblings:
    """The futures of one submit or map: the finished, unread ones are fetched together."""

    __slots__ = ("finished", "__weakref__")

    def __init__(self) -> None:
        self.finished: dict[str, RemoteTaskFuture] = {}


class LazyStates:
    """The finished runs of a runner whose full State is still in Ray."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._lock = threading.Lock()
        self._lazy: dict[str, tuple[RemoteTaskFuture, State[Any], Siblings]] = {}

    def keep(self, future: RemoteTaskFuture, header: State[Any], siblings: Siblings) -> None:
        """``future``'s run finished with ``header``; its full State (``future.native``) is read when asked for."""
        with self._lock:
            self._lazy[future.task_run_id] = (future, header, siblings)
            siblings.finished[future.task_run_id] = future
        future.mark_finished()

    def release(self) -> None:
        """Give every finished, unread run its header State: large results stay behind, released."""
        with self._lock:
            lazy, self._lazy = self._lazy, {}
        for future, header, _ in lazy.values():
            future.install(header)

    def fetch(self, future: RemoteTaskFuture) -> State[Any]:
        """Get ``future``'s State from Ray, with up to FETCH_BATCH finished siblings of its map."""
        with self._lock:
            found = self._lazy.get(future.task_run_id)
            if found is None:  # released meanwhile: read it alone
                return self._get_one(future)
            siblings = found[2]
            take = [future]
            for other in list(siblings.finished.values()):
                if len(take) >= FETCH_BATCH:
                    break
                if other is not future and other.remote:
                    take.append(other)
            for f in take:
                siblings.finished.pop(f.task_run_id, None)
                self._lazy.pop(f.task_run_id, None)
            try:
                refs = list(dict.fromkeys(f.native for f in take))  # the calls of one batch share a ref
                outcomes = dict(zip(refs, self._ray.get(refs, timeout=120), strict=True))
                states = [pick(outcomes[f.native], f.task_run_id) for f in take]
            except Exception:
                states = [self._get_one(f) for f in take]
            for f, state in zip(take[1:], states[1:], strict=True):
                f.install(state)
            return states[0]

    def _get_one(self, future: RemoteTaskFuture) -> State[Any]:
        try:
            return pick(self._ray.get(future.native, timeout=60), future.task_run_id)
        except Exception as exc:
            message = f"the state of task run {future.task_run_name!r} could not be read from Ray: {exc!r}"
            error = CrashedRunError(message)
            error.__cause__ = exc
            return Crashed(message, exc=error)
