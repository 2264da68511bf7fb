"""Run loggers, ``log_prints``, and log records that cross process boundaries.

* :func:`get_run_logger` gives a logger whose records name their runs.
* ``log_prints=True`` sends ``print()`` inside a task or flow to that logger.
  ``builtins.print`` is wrapped once, on first use; the wrapper looks up a
  context variable, so only prints made inside such a run are redirected.
* A task running in another process than its flow (process pool, Dask, Ray
  workers) captures the records logged during the run — at the flow's level
  — and the engine attaches them to the final state (``log_records``). When
  a future receives such a state in the flow process, the records are
  replayed into the same logger names, so they reach the flow's handlers
  with their run names. Any runner gets this without code of its own.
  A runner that streams records to the flow process as they are made (the
  Dask runner does) sets ``record.taskyard_streamed = True`` on each one it
  sent; the engine then does not ship that record a second time.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

from taskyard.context import FlowRunInfo, TaskRunInfo, flow_run_var, task_run_var

__all__ = ("get_run_logger", "RunLoggerAdapter", "run_extra", "LogCapture", "levels_held", "replay_records", "printing_to")

RUN_LOGGER = "taskyard.runs"


class RunLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds ``flow_run_name``, ``task_run_name`` (and ids) to every record's ``extra``.

    The message itself is left as given: formatters (the console handler's,
    or a user's) put the run names where they want them.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra")
        kwargs["extra"] = {**(self.extra or {}), **given} if given else self.extra
        return msg, kwargs


def run_extra(flow_run: FlowRunInfo | None, task_run: TaskRunInfo | None) -> dict[str, Any]:
    """The ``extra`` fields naming a flow run and a task run (None where there is none)."""
    return {
        "flow_run_name": flow_run.name if flow_run else None,
        "flow_run_id": flow_run.id if flow_run else None,
        "task_run_name": task_run.name if task_run else None,
        "task_run_id": task_run.id if task_run else None,
    }


def get_run_logger(name: str = RUN_LOGGER) -> RunLoggerAdapter:
    """A logger for the current flow or task run.

    Its records carry ``flow_run_name``/``flow_run_id`` and
    ``task_run_name``/``task_run_id`` as attributes (None where there is
    none); the console handler shows the run name beside each message.

    Args:
        name: The logger name (default ``taskyard.runs``).
    """
    return RunLoggerAdapter(logging.getLogger(name), run_extra(flow_run_var.get(), task_run_var.get()))


# -- print() → the run logger -------------------------------------------------------

_print_target: ContextVar[bool] = ContextVar("taskyard_log_prints", default=False)
_original_print = builtins.print
_patch_lock = threading.Lock()


def _print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
    if _print_target.get() and (file is None or file is sys.stdout):
        get_run_logger().info((sep if sep is not None else " ").join(str(a) for a in args))
    else:
        _original_print(*args, sep=sep, end=end, file=file, flush=flush)


def printing_to(enabled: bool) -> Any:
    """Turn print redirection on or off for the current context; returns a reset token."""
    if enabled and builtins.print is not _print:
        with _patch_lock:
            builtins.print = _print
    return _print_target.set(enabled)


def reset_printing(token: Any) -> None:
    _print_target.reset(token)


# -- capturing records in a worker process and replaying them ------------------------

_capture: ContextVar[list[dict[str, Any]] | None] = ContextVar("taskyard_log_capture", default=None)


class _CaptureHandler(logging.Handler):
    """On the root logger of a worker process: keeps records of the run in progress."""

    taskyard_internal = True  # not a user's logging configuration (taskyard.console)

    def emit(self, record: logging.LogRecord) -> None:
        sink = _capture.get()
        if sink is None or getattr(record, "taskyard_streamed", False):
            return
        data = dict(record.__dict__)
        data["msg"] = record.getMessage()
        data["args"] = None
        if record.exc_info:
            data["exc_text"] = logging.Formatter().formatException(record.exc_info)
        data["exc_info"] = None
        sink.append({k: v for k, v in data.items() if _plain(v)})


def _plain(value: Any) -> bool:
    return value is None or type(value) in (str, int, float, bool)


_handler: _CaptureHandler | None = None
_LEVELLED = (logging.getLogger("taskyard"), logging.getLogger())


class _Levels:
    """The worker's logger levels, lowered while runs that capture records are in progress.

    An unconfigured worker's loggers pass WARNING and above; a run captures at
    its flow's level. Each holder (a run, or a whole batch of runs) asks for a
    level; the loggers pass the lowest level asked for while any holder is
    left, and get their own levels back after the last. Setting a logger's
    level clears every logger's cache, so this is done when the lowest level
    changes, not per run — and concurrent runs in one worker (threads of a
    Dask worker) never restore a level another run still needs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[int, int] = {}
        self._saved: list[tuple[logging.Logger, int]] = []
        self._applied: int | None = None

    def hold(self, level: int) -> None:
        with self._lock:
            self._holders[level] = self._holders.get(level, 0) + 1
            if self._applied is None or level < self._applied:
                self._apply(level)

    def release(self, level: int) -> None:
        with self._lock:
            left = self._holders[level] - 1
            if left:
                self._holders[level] = left
                return
            del self._holders[level]
            lowest = min(self._holders, default=None)
            if lowest != self._applied:
                self._apply(lowest)

    def _apply(self, level: int | None) -> None:
        # As Logger.setLevel, but every logger's cache is cleared once, not once per logger set:
        # a worker with hundreds of loggers (Ray's) paid that on every run.
        changed = bool(self._saved)
        for logger, saved in self._saved:
            logger.level = saved
        self._saved = []
        self._applied = level
        if level is not None:
            for logger in _LEVELLED:
                if logger.getEffectiveLevel() > level:
                    self._saved.append((logger, logger.level))
                    logger.level = level
                    changed = True
        if changed:
            logging.Logger.manager._clear_cache()  # type: ignore[attr-defined]


_levels = _Levels()


class LogCapture:
    """Collect the records logged in this context at ``level`` and above."""

    def __init__(self, level: int) -> None:
        global _handler
        with _patch_lock:
            if _handler is None:
                _handler = _CaptureHandler()
                logging.getLogger().addHandler(_handler)
        self.level = level
        self.records: list[dict[str, Any]] = []
        self._token: Any = None

    def __enter__(self) -> LogCapture:
        self._token = _capture.set(self.records)
        _levels.hold(self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        _capture.reset(self._token)
        _levels.release(self.level)


@contextlib.contextmanager
def levels_held(level: int) -> Iterator[None]:
    """Keep the loggers passing ``level`` for a whole batch of runs, instead of run by run."""
    _levels.hold(level)
    try:
        yield
    finally:
        _levels.release(level)


def replay_records(records: tuple[dict[str, Any], ...]) -> None:
    """Hand records made in another process to this process's loggers."""
    for data in records:
        record = logging.makeLogRecord(data)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
