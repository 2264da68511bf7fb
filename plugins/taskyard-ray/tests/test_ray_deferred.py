"""A task worker on the Ray runner: a deferred map fans out to the cluster's worker processes."""

from __future__ import annotations

import os
import threading

from taskyard import task
from taskyard.background import TaskWorker
from taskyard_ray import RayTaskRunner

WAIT = 180


@task
def where(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


class TestDeferredOnRay:
    def test_a_worker_runs_its_claims_on_the_ray_workers(self, ray_address: str) -> None:
        """Deferred runs claimed by one worker run on the Ray cluster's processes; the producer reads every result."""
        worker = TaskWorker(where, limit=8, task_runner=RayTaskRunner(address=ray_address))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            results = where.map(range(40), deferred=True).result(timeout=WAIT)
        finally:
            worker.stop()
            thread.join(WAIT)
        assert not thread.is_alive()
        assert [square for square, _ in results] == [x * x for x in range(40)]
        assert os.getpid() not in {pid for _, pid in results}  # none ran in this process
