"""Run loggers: log records that name the flow run and task run they came from."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from taskyard.context import flow_run_var, task_run_var

__all__ = ("get_run_logger", "RunLoggerAdapter")


class RunLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds ``flow_run_name``, ``task_run_name`` (and ids) to every record's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        extra = self.extra or {}
        names = [n for n in (extra.get("flow_run_name"), extra.get("task_run_name")) if n]
        return (f"[{' / '.join(names)}] {msg}" if names else msg), kwargs


def get_run_logger(name: str = "taskyard.runs") -> RunLoggerAdapter:
    """A logger for the current flow or task run.

    Its records carry ``flow_run_name``/``flow_run_id`` and
    ``task_run_name``/``task_run_id`` (None where there is none) and their
    message is prefixed with the run names.
    """
    flow_run = flow_run_var.get()
    task_run = task_run_var.get()
    extra = {
        "flow_run_name": flow_run.name if flow_run else None,
        "flow_run_id": flow_run.id if flow_run else None,
        "task_run_name": task_run.name if task_run else None,
        "task_run_id": task_run.id if task_run else None,
    }
    return RunLoggerAdapter(logging.getLogger(name), extra)
