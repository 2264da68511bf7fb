"""The console handler of the ``taskyard`` loggers, installed when a flow run starts.

A flow run calls :func:`configure_console` with its settings. Unless the
process has a logging configuration of its own (a handler on the root logger
or on ``taskyard``), the ``taskyard`` logger —
never the root logger — gets one :class:`ConsoleHandler`: records at
``TASKYARD_LOGGING_LEVEL`` (INFO) and above, to standard error, as::

    14:02:07.311 | INFO    | Flow run 'etl-3f2a' - Beginning flow run on runner 'threads'
    14:02:07.412 | INFO    | Task run 'load-9c1e' - loaded 120 rows

The run name comes from the record's ``flow_run_name``/``task_run_name``
attributes (:func:`taskyard.logs.get_run_logger` puts them there), never
from its message. A level the user sets on ``taskyard`` wins over the
setting; handlers the user adds later win from the next flow run on (the
console handler is taken away again).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from taskyard.settings import Settings

__all__ = ("ConsoleHandler", "RunFormatter", "configure_console", "run_label")

_RUN_FIELDS = {"flow_run_name": None, "flow_run_id": None, "task_run_name": None, "task_run_id": None}
_lock = threading.Lock()
_installed: ConsoleHandler | None = None
_level_we_set: int | None = None


def run_label(record: logging.LogRecord) -> str:
    """``Task run 'name'``, ``Flow run 'name'`` or, for records of no run, the logger name."""
    task_run = getattr(record, "task_run_name", None)
    if task_run:
        return f"Task run {task_run!r}"
    flow_run = getattr(record, "flow_run_name", None)
    if flow_run:
        return f"Flow run {flow_run!r}"
    return record.name


class RunFormatter(logging.Formatter):
    """A ``%``-style formatter that also offers ``%(run_label)s`` and the run fields.

    The record is not changed: other handlers see it as it was logged.
    """

    def __init__(self, fmt: str, datefmt: str | None = "%H:%M:%S") -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        values = {**_RUN_FIELDS, **record.__dict__, "run_label": run_label(record)}
        return self._fmt % values if self._fmt else record.message


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record.

    Looking the stream up each time lets a live progress display, which
    replaces ``sys.stderr`` while it runs, print the lines above itself. In
    a process forked from the flow's (a process-pool worker) it writes
    nothing: there the records travel to the flow process with the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() == self.pid:
            super().emit(record)


def _ours(handler: logging.Handler) -> bool:
    # Handlers taskyard itself installs (log capture on a worker's root logger,
    # the run store's log recorder) are not a user's logging configuration.
    return handler is _installed or getattr(handler, "taskyard_internal", False)


def user_configured(logger: logging.Logger) -> bool:
    """True when the process has handlers of its own (on the root logger or on ``logger``)."""
    return any(not _ours(h) for h in (*logging.getLogger().handlers, *logger.handlers))


def configure_console(settings: Settings) -> None:
    """Install, update or take away the console handler, as ``settings`` and the process say."""
    global _installed, _level_we_set
    logger = logging.getLogger("taskyard")
    with _lock:
        if not settings.logging_console or user_configured(logger):
            if _installed is not None:
                logger.removeHandler(_installed)
                _installed = None
                if _level_we_set is not None and logger.level == _level_we_set:
                    logger.setLevel(logging.NOTSET)
                _level_we_set = None
            return
        if _installed is None or _installed.pid != os.getpid():
            _installed = ConsoleHandler()
            logger.addHandler(_installed)
        _installed.setFormatter(RunFormatter(settings.logging_format))
        if logger.level in (logging.NOTSET, _level_we_set):  # a level the user set wins
            logger.setLevel(settings.logging_level)
            _level_we_set = settings.logging_level
