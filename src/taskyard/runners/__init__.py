"""Task runners: the interface and the built-in implementations.

The built-ins load on first use, so ``import taskyard.runners`` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from taskyard.runners.base import TaskRunner
from taskyard.runners.registry import available_runners, get_runner_class, register_runner, registry

if TYPE_CHECKING:
    from taskyard.runners.processes import ProcessPoolTaskRunner
    from taskyard.runners.sequential import SequentialTaskRunner
    from taskyard.runners.threads import ThreadPoolTaskRunner

__all__ = (
    "TaskRunner",
    "SequentialTaskRunner",
    "ThreadPoolTaskRunner",
    "ProcessPoolTaskRunner",
    "register_runner",
    "get_runner_class",
    "available_runners",
    "registry",
)

_LAZY = {
    "SequentialTaskRunner": "sequential",
    "ThreadPoolTaskRunner": "threads",
    "ProcessPoolTaskRunner": "processes",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return get_runner_class(_LAZY[name])
    raise AttributeError(f"module 'taskyard.runners' has no attribute {name!r}")
