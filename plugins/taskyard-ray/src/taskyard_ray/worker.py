"""What runs in the Ray workers: one remote function that runs the task engine.

::

    run_on_ray.options(...).remote(call, ids, *upstream_refs_then_shared_refs)
                             │ Ray resolves the top-level ObjectRefs: upstream
                             ▼ States and the values put once with ray.put
    toolkit.run_on_worker: shared values back in place, call.run({id: state})
                             │ the engine runs here: retries, timeout, hooks
                             ▼
    returns (header, state): the header is the State itself when its result is
    small, else the State with the result left out (ReleasedResult) and the
    run's log records; the full State stays in Ray's object store until read.

Ray's own retries are off (``max_retries=0``): a lost worker comes back to
the runner as an error, and taskyard's ``retries`` decide. A worker told to
stop while it runs a task (SIGTERM: ``ray stop``, a node shutting down)
exits at once instead of letting the task end Failed with ``SystemExit``, so
the run counts as lost (Crashed, retries apply), not as the task's failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from taskyard.runners.base import State, TaskCall
from taskyard.runners.toolkit import ReleasedResult, estimate_size, run_on_worker

__all__ = ("run_on_ray", "HEADER_MAX_BYTES")

# Results at least this large (estimated) stay in Ray until read; smaller ones
# come back to the flow process with the header, at once.
HEADER_MAX_BYTES = 64_000


def run_on_ray(call: TaskCall[Any], ids: tuple[str, ...], *values: Any) -> tuple[State[Any], State[Any]]:
    """Run one call: ``values`` are the upstream states (one per id), then shared values."""
    with _termination_ends_the_worker():
        state = run_on_worker(call, ids, values, "a Ray worker")
    if not state.is_completed():
        return state, state
    size = estimate_size(state.data)
    if size < HEADER_MAX_BYTES:
        return state, state
    message = (
        f"the result of this run (~{size / 1e6:.1f} MB) stayed in Ray and was released when its flow "
        "run ended; read it inside the flow run, or set persist_result=True"
    )
    header = state.model_copy(update={"data": ReleasedResult(message)})
    return header, state.model_copy(update={"log_records": None})


class _Terminated(BaseException):
    """SIGTERM arrived while a task ran (a BaseException: the engine does not take it for the task's)."""


@contextlib.contextmanager
def _termination_ends_the_worker() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Terminated:
        os._exit(1)  # Ray then reports this run's worker as lost
    finally:
        signal.signal(signal.SIGTERM, previous)
