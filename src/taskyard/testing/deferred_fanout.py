"""A task worker that fans deferred runs out to a runner's own processes: one check for every cluster plugin."""

from __future__ import annotations

import os
import threading
from typing import Any

from taskyard import task
from taskyard.background import TaskWorker
from taskyard.runners.base import TaskRunner

__all__ = ("check_worker_fans_out",)


@task
def where(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def check_worker_fans_out(runner: TaskRunner[Any], size: int = 40, timeout: float = 180) -> None:
    """Deferred runs claimed by one worker on ``runner`` run in its processes; the producer reads every result."""
    worker = TaskWorker(where, limit=8, task_runner=runner)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        results = where.map(range(size), deferred=True).result(timeout=timeout)
    finally:
        worker.stop()
        thread.join(timeout)
    assert not thread.is_alive(), "the task worker did not stop"
    assert [square for square, _ in results] == [x * x for x in range(size)]
    assert os.getpid() not in {pid for _, pid in results}, "a deferred run ran in the worker's own process"
