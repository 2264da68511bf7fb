"""The current run, read as module attributes: ``from taskyard.runtime import flow_run, task_run``.

``flow_run.name``, ``task_run.id`` ... read the run context of the calling
code, like Prefect's ``prefect.runtime``; outside a run they are None (or
empty). Values come from taskyard's run context, never from the environment.
"""

from taskyard.runtime import flow_run, task_run

__all__ = ("flow_run", "task_run")
