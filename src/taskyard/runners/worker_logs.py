"""Worker logs: records logged during a run on a worker, carried to the flow process's loggers.

:func:`record_payload` turns a record into a plain dict a backend can carry
(an event, a message); :class:`LogRelay` hands the payloads of this flow
process's runs to its loggers. Part of the runner toolkit
(:mod:`taskyard.runners.toolkit` re-exports these).
"""

from __future__ import annotations

import logging
from typing import Any

from taskyard.runners.base import TaskCall

__all__ = ("record_payload", "LogRelay")

_PAYLOAD_FIELDS = (
    "name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "threadName", "processName", "process",
)


def record_payload(record: logging.LogRecord, where: str = "") -> dict[str, Any]:
    """A log record made on a worker as a plain, picklable dict (worker side).

    It carries the message (formatted), the exception text, and the run
    names and ids — from the record, or from the run the worker is executing.
    """
    from taskyard.context import flow_run_var, task_run_var

    flow_run = flow_run_var.get()
    task_run = task_run_var.get()
    payload = {field: getattr(record, field, None) for field in _PAYLOAD_FIELDS}
    payload.update(
        msg=record.getMessage(),
        exc_text=logging.Formatter().formatException(record.exc_info) if record.exc_info else record.exc_text,
        flow_run_id=getattr(record, "flow_run_id", None) or (flow_run.id if flow_run else None),
        flow_run_name=getattr(record, "flow_run_name", None) or (flow_run.name if flow_run else None),
        task_run_id=getattr(record, "task_run_id", None) or (task_run.id if task_run else None),
        task_run_name=getattr(record, "task_run_name", None) or (task_run.name if task_run else None),
        worker=where,
    )
    return payload


class LogRelay:
    """Flow side: hands payloads from :func:`record_payload` to this process's loggers.

    Only payloads of runs this process placed (see :meth:`watch`) are
    delivered; a cluster shared by many flow processes sends every record to
    every subscriber.
    """

    def __init__(self) -> None:
        self._run_ids: set[str] = set()

    def watch(self, call: TaskCall[Any]) -> None:
        """Deliver the records of ``call``'s flow run (or of the call itself, outside a flow)."""
        flow_run = call.flow_run
        self._run_ids.add(flow_run.id if flow_run is not None else call.task_run.id)

    def deliver(self, payload: dict[str, Any]) -> None:
        """Hand one payload to the logger it was logged on, if it belongs to a watched run."""
        if payload.get("flow_run_id") not in self._run_ids and payload.get("task_run_id") not in self._run_ids:
            return
        record = logging.makeLogRecord({**payload, "args": None, "taskyard_forwarded": True})
        target = logging.getLogger(record.name)
        if target.isEnabledFor(record.levelno):
            target.handle(record)
