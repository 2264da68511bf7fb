"""What runs on the Dask workers: the call wrapper, result headers and log forwarding.

::

    client.submit(run_call_on_worker, call, ids, *upstreams_then_shared)
                                   │ Dask materialises the upstream Dask futures
                                   ▼ (their States) and the scattered shared values
    run_call_on_worker → toolkit.run_on_worker: shared values back in place, call.run({id: state})
                                   │ the engine runs here: retries, timeout, hooks
                                   ▼
                     final State ── kept on the worker as the Dask result

Records of the ``taskyard`` loggers emitted on a worker go to the flow process
through Dask's event log (:class:`LogForwarder`, topic :data:`LOG_TOPIC`).
This module imports distributed; the runner imports it only once it starts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from taskyard.runners.base import BatchResult, State, TaskCall, run_batch, sendable_state
from taskyard.runners.toolkit import ReleasedResult, record_payload, run_batch_on_worker, run_on_worker

__all__ = (
    "run_call_on_worker",
    "run_mapped_call_on_worker",
    "run_calls_on_worker",
    "run_marked_call_on_worker",
    "run_marked_calls_on_worker",
    "report_start",
    "state_headers",
    "ReleasedResult",
    "LogForwarder",
    "LOG_TOPIC",
)

LOG_TOPIC = "taskyard-logs"
# Results at least this large (dask.sizeof) stay on the cluster when a flow run
# ends without having read them; smaller ones come back with their state, up to
# HEADER_BUDGET_BYTES from each worker (a large map of small results stays too).
HEADER_MAX_BYTES = 1_000_000
HEADER_BUDGET_BYTES = 1_000_000


def _register_sizeof() -> None:
    # Dask sizes a State as a small object; its data is what takes the memory
    # (and what the scheduler should weigh when it moves or spills it).
    from dask.sizeof import sizeof

    def _sizeof_state(state: State[Any]) -> int:
        return 1000 + int(sizeof(state.data))  # taskyard_dask.batches counts on the 1000

    def _sizeof_batch(result: BatchResult) -> int:
        return sum(_sizeof_state(state) for state in result.states.values())

    sizeof.register(State)(_sizeof_state)  # type: ignore[no-untyped-call]
    sizeof.register(BatchResult)(_sizeof_batch)  # type: ignore[no-untyped-call]


_register_sizeof()


def run_call_on_worker(call: TaskCall[Any], ids: tuple[str, ...], *values: Any) -> State[Any]:
    """Run one call: ``values`` are the upstream states (one per id), then shared values."""
    return sendable_state(run_on_worker(call, ids, values, "a Dask worker"), "its Dask worker")


def run_mapped_call_on_worker(call: TaskCall[Any], shared: tuple[Any, ...] = ()) -> State[Any]:
    """Run one call of a batch (no upstreams); ``shared`` are the scattered values."""
    # Found here, an unpicklable result fails its run with one line, not distributed's error logs.
    return sendable_state(run_on_worker(call, (), shared, "a Dask worker"), "its Dask worker")


def run_calls_on_worker(calls: list[TaskCall[Any]], ids: tuple[str, ...], *values: Any) -> BatchResult:
    """Run a batch of calls, each on its own: ``values`` are the upstream states (one per id), then shared values."""
    result = run_batch_on_worker(calls, ids, values, "a Dask worker")
    result.states = {key: sendable_state(state, "its Dask worker") for key, state in result.states.items()}
    return result


def report_start(topic: str, mark: str) -> None:
    """Tell the flow process that the run ``mark`` starts, before it does (see taskyard_dask.losses).

    A direct call to the scheduler, answered before the run begins: unlike a
    worker's batched events it cannot be lost with the worker if the run
    kills it at once. If it fails, the run is taken as not started.
    """
    from distributed import get_worker
    from distributed.utils import sync

    try:
        worker = get_worker()
        sync(worker.loop, worker.scheduler.log_event, topic=topic, msg=mark)
    except Exception as exc:
        logging.getLogger("taskyard.dask").debug("reporting the start of %s failed: %r", mark, exc)


def current_key() -> str:
    """The Dask key of the task this worker thread runs."""
    from distributed import get_worker

    return str(get_worker().get_current_task())


def run_marked_call_on_worker(topic: str, call: TaskCall[Any], ids: tuple[str, ...], *values: Any) -> State[Any]:
    """:func:`run_call_on_worker`, with its start reported on ``topic`` (its Dask key)."""
    report_start(topic, current_key())
    return run_call_on_worker(call, ids, *values)


def run_marked_calls_on_worker(topic: str, calls: list[TaskCall[Any]], ids: tuple[str, ...], *values: Any) -> BatchResult:
    """:func:`run_calls_on_worker`, with each call's start reported on ``topic`` ("key/task run id")."""
    key = current_key()

    def run_one(call: TaskCall[Any]) -> State[Any]:
        report_start(topic, f"{key}/{call.task_run.id}")
        return sendable_state(run_on_worker(call, ids, values, "a Dask worker"), "its Dask worker")

    return run_batch(calls, run_one)


def state_headers(keys: list[str], dask_worker: Any = None) -> dict[str, Any]:
    """``client.run`` helper: the states (or batch results) this worker holds for ``keys``, large results left out."""
    out: dict[str, Any] = {}
    data = dask_worker.data
    budget = [HEADER_BUDGET_BYTES]  # shared by every state this worker sends back
    for key in keys:
        try:
            found = data[key]
        except KeyError:
            continue
        if isinstance(found, BatchResult):
            out[key] = BatchResult({k: _header(s, budget) for k, s in found.states.items()}, found.seconds)
        else:
            out[key] = _header(found, budget)
    return out


def _header(state: State[Any], budget: list[int]) -> State[Any]:
    """``state``, its result released unless it is small and ``budget[0]`` bytes still allow it."""
    from dask.sizeof import sizeof

    if state.is_completed():
        size = sizeof(state.data)
        if size < HEADER_MAX_BYTES and size <= budget[0]:
            budget[0] -= size
        else:
            message = (
                f"the result of this run ({size:,} bytes) stayed on the Dask cluster and was released "
                "when its flow run ended; read it inside the flow run, or set persist_result=True"
            )
            state = state.model_copy(update={"data": ReleasedResult(message)})
    return state


# -- logs -------------------------------------------------------------------------------


class _EventHandler(logging.Handler):
    """Ships each record to the flow process as a Dask event."""

    def __init__(self, worker: Any, topic: str) -> None:
        super().__init__()
        self.worker = worker
        self.topic = topic

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "taskyard_forwarded", False):
            return
        try:
            payload = record_payload(record, str(self.worker.address))
            self.worker.log_event(self.topic, payload)
            record.taskyard_streamed = True  # the engine need not ship it with the state
        except Exception:
            self.handleError(record)


class LogForwarder(WorkerPlugin):
    """Worker plugin: forwards records of the ``taskyard`` loggers to ``topic``.

    ``level`` is the flow process's effective level for ``taskyard``, so the
    worker drops what the flow process would drop anyway. Workers running in
    the flow's own process (``processes=False``) are left alone: their
    records reach the flow's handlers directly.
    """

    def __init__(self, topic: str = LOG_TOPIC, level: int = logging.INFO, client_pid: int | None = None) -> None:
        self.topic = topic
        self.level = level
        self.client_pid = client_pid if client_pid is not None else os.getpid()
        self._handler: _EventHandler | None = None
        self._old_level: int | None = None

    def setup(self, worker: Any) -> None:
        if os.getpid() == self.client_pid:
            return
        logger = logging.getLogger("taskyard")
        self._handler = _EventHandler(worker, self.topic)
        self._handler.setLevel(self.level)
        logger.addHandler(self._handler)
        if logger.getEffectiveLevel() > self.level:
            self._old_level = logger.level
            logger.setLevel(self.level)

    def teardown(self, worker: Any) -> None:
        if self._handler is not None:
            logger = logging.getLogger("taskyard")
            logger.removeHandler(self._handler)
            if self._old_level is not None:
                logger.setLevel(self._old_level)
            self._handler = None

