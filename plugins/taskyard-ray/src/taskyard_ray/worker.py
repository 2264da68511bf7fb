"""What runs in the Ray workers: one remote function per task, running the task engine.

::

    task_function(task, flow_run) ── pickled and exported to Ray once per task
                                     (and flow run): the workers cache it
    fn.options(...).remote(parameters, task_run, upstreams, ids, *upstream_refs_then_shared_refs)
                             │ Ray resolves the top-level ObjectRefs: upstream
                             ▼ States and the values put once with ray.put
    run_on_ray: TaskCall rebuilt, toolkit.run_on_worker: shared values back in
                             │ place, call.run({id: state}); the engine runs
                             ▼ here: retries, timeout, hooks
    returns (header, state): the header is the State itself when its result is
    small, else the State with the result left out (ReleasedResult) and the
    run's log records; the full State stays in Ray's object store until read.

    batch_function(task, flow_run): the same for a batch of calls of a map
    (taskyard_ray.batches): each call runs through the engine on its own,
    and the header and full outcome are BatchResults, one State per call.

Only what differs between the runs of a map travels with each call (its
parameters and run identity); the task and the flow run's context travel once,
inside the exported function.

Ray's own retries are off (``max_retries=0``): a lost worker comes back to
the runner as an error, and taskyard's ``retries`` decide. A worker told to
stop while it runs a task (SIGTERM: ``ray stop``, a node shutting down)
exits at once instead of letting the task end Failed with ``SystemExit``, so
the run counts as lost (Crashed, retries apply), not as the task's failure.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from taskyard.runners.base import BatchResult, State, TaskCall, sendable_state
from taskyard.runners.toolkit import ReleasedResult, estimate_size, run_batch_on_worker, run_on_worker
from taskyard_ray import wire

__all__ = ("run_on_ray", "run_batch_on_ray", "task_function", "batch_function", "HEADER_MAX_BYTES")

_R = TypeVar("_R")

# Results at least this large (estimated) stay in Ray until read; smaller ones
# come back to the flow process with the header, at once.
HEADER_MAX_BYTES = 64_000

RemoteBody = Callable[..., tuple[Any, Any]]


def task_function(task: Any, flow_run: Any, log_sink: str | None = None) -> RemoteBody:
    """The function Ray runs for the calls of ``task`` in ``flow_run`` (made once per runner).

    ``log_sink`` names the actor that streams the runs' log records to the
    flow process (see :mod:`taskyard_ray.logs`).
    """

    def run_task(payload: bytes, *values: Any) -> tuple[Any, Any]:
        parameters, task_run, upstreams, ids = wire.loads(payload)
        return run_on_ray(TaskCall(task, parameters, task_run, flow_run, upstreams), ids, *values, log_sink=log_sink)

    # What Ray shows for these runs (its dashboard, `ray list tasks`, its errors).
    run_task.__name__ = run_task.__qualname__ = f"taskyard:{getattr(task, 'name', 'task')}"
    return run_task


def batch_function(task: Any, flow_run: Any, log_sink: str | None = None) -> RemoteBody:
    """The function Ray runs for a batch of calls of ``task`` in ``flow_run`` (see :func:`task_function`)."""

    def run_tasks(payload: bytes, *values: Any) -> tuple[Any, Any]:
        runs, ids, where = wire.loads(payload)
        calls = [TaskCall(task, parameters, task_run, flow_run, upstreams) for parameters, task_run, upstreams in runs]
        # Each upstream value came once (a batch's outcome stands for many ids): loaded once, then spread.
        n = max(where, default=-1) + 1
        loaded = [wire.as_outcome(v) for v in values[:n]]
        return run_batch_on_ray(calls, ids, *(loaded[i] for i in where), *values[n:], log_sink=log_sink)

    run_tasks.__name__ = run_tasks.__qualname__ = f"taskyard:{getattr(task, 'name', 'task')}[batch]"
    return run_tasks


def run_on_ray(
    call: TaskCall[Any], ids: tuple[str, ...], *values: Any, log_sink: str | None = None
) -> tuple[Any, Any]:
    """Run one call: ``values`` are the upstream states (one per id, as their workers returned them), then shared values.

    Returns the header and the full state: both the same bytes when the
    result is small, else the header as bytes and the State object.
    """
    state: State[Any] = _guarded(lambda upstreams: run_on_worker(call, ids, upstreams, "a Ray worker"), ids, values, log_sink)
    if not _large(state):
        data = wire.state_dumps(state, "its Ray worker")
        return data, data
    header, full = _split(state)
    return wire.state_dumps(header, "its Ray worker"), full


def run_batch_on_ray(
    calls: list[TaskCall[Any]], ids: tuple[str, ...], *values: Any, log_sink: str | None = None
) -> tuple[Any, Any]:
    """Run a batch of calls, each on its own (``values`` as for :func:`run_on_ray`, for all the calls).

    Returns the header and the full :class:`BatchResult`: both the same
    bytes when every result is small, else a header of headers (bytes) and
    the BatchResult object.
    """
    result: BatchResult = _guarded(lambda upstreams: run_batch_on_worker(calls, ids, upstreams, "a Ray worker"), ids, values, log_sink)
    if not any(_large(state) for state in result.states.values()):
        try:
            data = wire.dumps(result)
        except Exception:  # a result or exception that will not pickle: each state says so alone
            data = wire.dumps(BatchResult({k: _sendable(s) for k, s in result.states.items()}, result.seconds))
        return data, data
    split = {k: _split(s) if _large(s) else (s, s) for k, s in result.states.items()}
    header = BatchResult({k: _sendable(h) for k, (h, _) in split.items()}, result.seconds)
    full = BatchResult({k: _sendable(f) if f is h else f for k, (h, f) in split.items()}, result.seconds)
    return wire.dumps(header), full


def _guarded(run: Callable[[tuple[Any, ...]], _R], ids: tuple[str, ...], values: tuple[Any, ...], log_sink: str | None) -> _R:
    """``run(values)`` with the upstreams' outcomes loaded, logs streamed and SIGTERM turned into a lost worker."""
    from taskyard_ray import logs

    n = len(ids)
    if n:
        values = (*(wire.as_outcome(v) for v in values[:n]), *values[n:])
    _install_sigterm_handler()
    global _running
    _running = True
    streaming = logs.begin(log_sink)
    try:
        out = run(values)
    except _Terminated:
        os._exit(1)  # told to stop while the task ran: Ray reports this run's worker as lost
    finally:
        _running = False
        if streaming:
            logs.end()
    if _terminated:
        os._exit(1)  # the engine swallowed the stop: still lost
    return out


def _large(state: State[Any]) -> bool:
    """True for a completed state whose result should stay in Ray until read."""
    return state.is_completed() and estimate_size(state.data) >= HEADER_MAX_BYTES


def _split(state: State[Any]) -> tuple[State[Any], State[Any]]:
    """A state with a large result: its header (the result released) and the full state."""
    size = estimate_size(state.data)
    message = (
        f"the result of this run (~{size / 1e6:.1f} MB) stayed in Ray and was released when its flow "
        "run ended; read it inside the flow run, or set persist_result=True"
    )
    header = state.model_copy(update={"data": ReleasedResult(message)})
    return header, sendable_state(state.model_copy(update={"log_records": None}), "its Ray worker")


def _sendable(state: State[Any]) -> State[Any]:
    """``state``, or the Failed state saying why it cannot travel back (via :func:`wire.state_dumps`)."""
    return wire.loads(wire.state_dumps(state, "its Ray worker"))  # type: ignore[no-any-return]


class _Terminated(BaseException):
    """SIGTERM arrived while a task ran (a BaseException: the engine does not take it for the task's)."""


_installed = False
_running = False
_terminated = False


def _install_sigterm_handler() -> None:
    """Once per worker process: SIGTERM during a run ends the worker, so the run counts as lost."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        global _terminated
        if _running:
            _terminated = True
            raise _Terminated
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True
