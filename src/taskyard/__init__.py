"""taskyard: tasks and flows on a pluggable task runner.

Mark functions with ``@task`` and ``@flow``; inside a flow, ``task.submit()``
and ``task.map()`` hand runs to the flow's task runner (threads by default;
``"sequential"``, ``"processes"``, ``"dask"``, ``"ray"`` or any registered
runner), chosen per flow without touching the task code.
"""

from typing import Any

from taskyard.annotations import allow_failure, quote, unmapped
from taskyard.caching import task_input_hash
from taskyard.context import get_run_context, tags
from taskyard.flows import Flow, flow
from taskyard.futures import FutureList, TaskFuture, as_completed, wait
from taskyard.logs import get_run_logger
from taskyard.retries import exponential_backoff
from taskyard.states import State, StateType
from taskyard.tasks import Task, task

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Serving is imported when first used: `import taskyard` stays light.
    if name in ("serve", "serve_tasks"):
        from taskyard import background

        return getattr(background, name)
    raise AttributeError(f"module 'taskyard' has no attribute {name!r}")


__all__ = (
    "flow",
    "task",
    "Flow",
    "Task",
    "unmapped",
    "allow_failure",
    "quote",
    "wait",
    "as_completed",
    "tags",
    "get_run_logger",
    "get_run_context",
    "State",
    "StateType",
    "TaskFuture",
    "FutureList",
    "exponential_backoff",
    "task_input_hash",
    "serve",  # from __getattr__
    "serve_tasks",  # from __getattr__
)
