"""``taskyard worker MODULE:TASK …``: a task worker for deferred runs, from the shell."""

from __future__ import annotations

import sys
from typing import Any

import click

from taskyard.cli.errors import UserError

__all__ = ("worker",)


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="MODULE:TASK...")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most this many runs at once.")
@click.option("--runner", "runner_name", metavar="NAME", help="Run them on this registered runner (default: threads).")
def worker(refs: tuple[str, ...], limit: int, runner_name: str | None) -> None:
    """Run the deferred runs of these tasks until Ctrl-C or SIGTERM.

    Each MODULE:TASK (or path/to/file.py:TASK) names a @task. Runs enqueued
    with apply_async / delay / map(deferred=True) in the store of
    TASKYARD_HOME are claimed (each by one worker) and run here. The first
    Ctrl-C or SIGTERM stops claiming and lets the runs held finish; a second
    hands the unfinished ones back to the queue.
    """
    from taskyard.background import TaskWorker, serve_tasks
    from taskyard.exceptions import RunnerNotFound

    tasks = [_load_task(ref) for ref in refs]
    try:
        TaskWorker(*tasks, limit=limit, task_runner=runner_name)  # bad input fails here, before serving
    except (RunnerNotFound, TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    try:
        serve_tasks(*tasks, limit=limit, task_runner=runner_name)
    except KeyboardInterrupt:
        click.echo("taskyard: interrupted: task worker stopped", err=True)
        sys.exit(130)


def _load_task(ref: str) -> Any:
    from taskyard.loading import FlowImportError, load_object
    from taskyard.tasks import Task

    try:
        obj = load_object(ref)
    except FlowImportError as exc:
        raise UserError(str(exc)) from None
    except (ValueError, LookupError, TypeError) as exc:
        raise UserError(str(exc)) from None
    if not isinstance(obj, Task):
        raise UserError(f"{ref} is {type(obj).__name__}, not a @task")
    return obj
