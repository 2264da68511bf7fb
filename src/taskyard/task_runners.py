"""Prefect's import path for the task runners: ``from taskyard.task_runners import ThreadPoolTaskRunner``.

A re-export of :mod:`taskyard.runners`; the built-ins still load on first use.
"""

from typing import TYPE_CHECKING, Any

from taskyard.runners.base import TaskRunner

if TYPE_CHECKING:
    from taskyard.runners.processes import ProcessPoolTaskRunner
    from taskyard.runners.sequential import SequentialTaskRunner
    from taskyard.runners.threads import ThreadPoolTaskRunner

__all__ = ("TaskRunner", "ThreadPoolTaskRunner", "ProcessPoolTaskRunner", "SequentialTaskRunner")


def __getattr__(name: str) -> Any:
    if name in __all__:
        from taskyard import runners

        return getattr(runners, name)
    raise AttributeError(f"module 'taskyard.task_runners' has no attribute {name!r}")
