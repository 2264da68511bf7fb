"""Run records and flow-run control, without a server.

Every flow run and task run is recorded in the embedded store under
``TASKYARD_HOME`` (see docs/runs.md). From code, and from inside tasks and
flows:

* :func:`start_flow_run` — a flow run in a process of its own;
* :func:`wait_for_flow_run`, :func:`read_flow_run`, :func:`list_flow_runs`;
* :func:`get_task_run_result` — a task run's persisted result;
* :func:`rename_flow_run`, :func:`cancel_flow_run`.

An unknown run id raises :class:`~taskyard.exceptions.RunNotFound`.
"""

from taskyard.exceptions import FlowRunError, RunNotFound
from taskyard.runs.control import cancel_flow_run, get_task_run_result, rename_flow_run, wait_for_flow_run
from taskyard.runs.launch import start_flow_run
from taskyard.runs.models import FlowRun, TaskRun
from taskyard.runs.reading import list_flow_runs, read_flow_run

__all__ = (
    "FlowRun",
    "TaskRun",
    "start_flow_run",
    "wait_for_flow_run",
    "read_flow_run",
    "list_flow_runs",
    "get_task_run_result",
    "rename_flow_run",
    "cancel_flow_run",
    "RunNotFound",
    "FlowRunError",
)
