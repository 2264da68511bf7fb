"""Settings from the environment, read when a flow run starts (not at import)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Settings", "current_settings")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

DEFAULT_LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run_label)s - %(message)s"


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``TASKYARD_*`` environment, as one flow run sees it.

    Attributes:
        home: ``TASKYARD_HOME``: where runs, results and caches live (default ``~/.taskyard``).
        task_runner: ``TASKYARD_TASK_RUNNER``: the runner for flows that name none.
        persist_results: ``TASKYARD_PERSIST_RESULTS``: persist every result.
        logging_console: ``TASKYARD_LOGGING_CONSOLE`` (default on): give the
            ``taskyard`` loggers a console handler when logging is not configured.
        logging_level: ``TASKYARD_LOGGING_LEVEL`` (default ``INFO``): the level of that handler.
        logging_format: ``TASKYARD_LOGGING_FORMAT``: its ``%``-style format.
        progress: ``TASKYARD_PROGRESS`` (default on): the live progress display
            of maps, shown only when standard output is a terminal.
        progress_delay: ``TASKYARD_PROGRESS_DELAY`` (default 1 s): how long a
            flow run goes before the display appears.
        record: ``TASKYARD_RECORD``: record runs in the store (on unless ``0``).
    """

    home: Path
    task_runner: str | None
    persist_results: bool
    logging_console: bool = True
    logging_level: int = logging.INFO
    logging_format: str = DEFAULT_LOG_FORMAT
    progress: bool = True
    progress_delay: float = 1.0
    record: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings from ``os.environ``.

        Raises:
            ValueError: A setting has a value it cannot take (the message names it).
        """
        env = os.environ
        home = Path(env.get("TASKYARD_HOME") or Path.home() / ".taskyard").expanduser()
        return cls(
            home=home,
            task_runner=env.get("TASKYARD_TASK_RUNNER") or None,
            persist_results=env.get("TASKYARD_PERSIST_RESULTS", "").strip().lower() in _TRUE,
            logging_console=_flag(env, "TASKYARD_LOGGING_CONSOLE", True),
            logging_level=_level(env.get("TASKYARD_LOGGING_LEVEL")),
            logging_format=env.get("TASKYARD_LOGGING_FORMAT") or DEFAULT_LOG_FORMAT,
            progress=_flag(env, "TASKYARD_PROGRESS", True),
            progress_delay=_seconds(env, "TASKYARD_PROGRESS_DELAY", 1.0),
            record=env.get("TASKYARD_RECORD", "1").strip().lower() not in _FALSE,
        )


def _flag(env: os._Environ[str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={text!r}: use 1 or 0 (also true/false, yes/no, on/off)")


def _level(text: str | None) -> int:
    if not text or not text.strip():
        return logging.INFO
    text = text.strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelNamesMapping().get(text.upper())
    if level is None:
        raise ValueError(f"TASKYARD_LOGGING_LEVEL={text!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _seconds(env: os._Environ[str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{name}={text!r}: use a number of seconds, 0 or more")
    return value


def current_settings() -> Settings:
    """The settings as the environment says now."""
    return Settings.from_env()
