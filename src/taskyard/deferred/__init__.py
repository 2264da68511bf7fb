"""Deferred task runs: enqueued in the run store, run by task workers (see docs/background.md).

``Task.apply_async``, ``Task.delay`` and ``Task.map(..., deferred=True)``
call :func:`enqueue_runs`; the futures they return are
:class:`DeferredFuture` objects that follow the runs through the store.
Workers live in :mod:`taskyard.background`.
"""

from taskyard.deferred.enqueue import enqueue_runs
from taskyard.deferred.future import DeferredFuture

__all__ = ("DeferredFuture", "enqueue_runs")
