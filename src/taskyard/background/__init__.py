"""Background work without a server: task workers and flows served on a schedule.

* :func:`serve_tasks` (and ``Task.serve``, ``taskyard worker``) — a worker
  that runs the deferred runs of its tasks (``apply_async``, ``delay``,
  ``map(deferred=True)``);
* :func:`serve` (and ``Flow.serve``) — a process that starts flow runs of
  its deployments on their schedules, and the runs started by name with
  ``taskyard.runs.start_flow_run("flow/deployment")``.

Both use the run store of TASKYARD_HOME as their queue and their history;
see docs/background.md.
"""

from __future__ import annotations

from typing import Any

from taskyard.background.deployments import Deployment
from taskyard.background.schedules import Cron, Interval, Schedule
from taskyard.background.worker import TaskWorker
from taskyard.interrupts import service_signals
from taskyard.tasks import Task

__all__ = ("serve_tasks", "serve", "TaskWorker", "Deployment", "Schedule", "Interval", "Cron")


def serve_tasks(*tasks: Task[..., Any], limit: int | None = 10, task_runner: Any = None) -> None:
    """Run a task worker for ``tasks`` in this process until Ctrl-C or SIGTERM.

    The worker claims the deferred runs of these tasks from the run store
    (any number of workers in any number of processes: each run is claimed
    once) and runs them through the engine on ``task_runner``. The first
    Ctrl-C or SIGTERM stops claiming and lets the runs it holds finish; a
    second hands what is still running back to the queue.

    Args:
        tasks: The tasks to serve (runs are matched to them by task name).
        limit: At most this many runs at once (default 10, as in Prefect; None: no limit).
        task_runner: A runner instance, class or registered name (``"processes"``,
            ``"dask"``, ``"ray"`` …); default: a thread pool of ``limit`` threads.

    Raises:
        TypeError, ValueError: The tasks, limit or runner cannot be served.
        KeyboardInterrupt: After a clean stop by Ctrl-C (printed as one line
            if nothing catches it). After SIGTERM the process ends by SIGTERM.
    """
    worker = TaskWorker(*tasks, limit=limit, task_runner=task_runner)
    with service_signals("task worker", lambda hurry: worker.stop(hurry=hurry)):
        worker.run()


def serve(*deployments: Deployment, limit: int | None = None) -> None:
    """Serve deployments (made with ``Flow.to_deployment``) until Ctrl-C or SIGTERM.

    Each deployment's schedule starts flow runs in this process, recorded
    in the run store with the deployment's name; runs started with
    ``start_flow_run("flow/deployment")`` from anywhere are run here too.
    At most ``limit`` runs are in flight at once. The first Ctrl-C or
    SIGTERM stops starting runs and lets those in flight finish; a second
    cancels them.

    Raises:
        TypeError, ValueError: Nothing to serve, or two deployments share a name.
    """
    from taskyard.background.serving import FlowServer

    server = FlowServer(deployments, limit=limit)
    with service_signals("flow server", lambda hurry: server.stop(hurry=hurry)):
        server.run()
