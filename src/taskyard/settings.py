"""Settings from the environment, read when a flow run starts (not at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Settings", "current_settings")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``TASKYARD_*`` environment, as one flow run sees it.

    Attributes:
        home: ``TASKYARD_HOME``: where runs, results and caches live (default ``~/.taskyard``).
        task_runner: ``TASKYARD_TASK_RUNNER``: the runner for flows that name none.
        persist_results: ``TASKYARD_PERSIST_RESULTS``: persist every result.
        record: ``TASKYARD_RECORD``: record runs in the store (on unless ``0``).
    """

    home: Path
    task_runner: str | None
    persist_results: bool
    record: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        home = Path(env.get("TASKYARD_HOME") or Path.home() / ".taskyard").expanduser()
        return cls(
            home=home,
            task_runner=env.get("TASKYARD_TASK_RUNNER") or None,
            persist_results=env.get("TASKYARD_PERSIST_RESULTS", "").strip().lower() in _TRUE,
            record=env.get("TASKYARD_RECORD", "1").strip().lower() not in _FALSE,
        )


def current_settings() -> Settings:
    """The settings as the environment says now."""
    return Settings.from_env()
