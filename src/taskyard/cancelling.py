"""Cancelling a flow run in this process: the one path every way of stopping a run takes.

``cancel_flow_run`` (through the store's watcher), Ctrl-C and SIGTERM all
end here::

    cancel_here(run_id, reason)
        └─ Dispatcher.cancel(reason): the runner is shut down with
           cancel_pending=True — queued task runs end Cancelled, running ones
           are interrupted where the backend can, and no new one starts
           (submit/map give Cancelled futures); the same for the run's
           subflows running in this process.
    the flow body's waits return → the run is judged Cancelled, its
    on_cancellation hooks run, and the recorder writes Cancelled.

A flow body busy in its own code (not waiting on task runs) notices when it
next submits or waits.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskyard.dispatch import Dispatcher

__all__ = ("register", "unregister", "cancel_here", "cancel_all_here", "active_runs")

_lock = threading.Lock()
# run id → (its dispatcher, the id of the flow run it is a subflow of)
_active: dict[str, tuple[Dispatcher, str | None]] = {}


def register(run_id: str, dispatcher: Dispatcher, parent_id: str | None) -> None:
    """A flow run started in this process."""
    with _lock:
        _active[run_id] = (dispatcher, parent_id)


def unregister(run_id: str) -> None:
    """The flow run ended."""
    with _lock:
        _active.pop(run_id, None)


def active_runs() -> list[str]:
    """The ids of the flow runs in progress in this process."""
    with _lock:
        return list(_active)


def cancel_here(run_id: str, reason: str) -> bool:
    """Cancel a flow run of this process and its subflows here; False if it is not running here."""
    with _lock:
        if run_id not in _active:
            return False
        targets = [run_id]
        for child, (_, parent) in _active.items():  # subflows, at any depth
            if parent in targets and child not in targets:
                targets.append(child)
        dispatchers = [_active[t][0] for t in targets]
    for dispatcher in reversed(dispatchers):
        dispatcher.cancel(reason)
    return True


def cancel_all_here(reason: str) -> list[str]:
    """Cancel every flow run in progress in this process (SIGTERM); returns their ids."""
    ids = active_runs()
    for run_id in ids:
        cancel_here(run_id, reason)
    return ids
