"""A task worker on the Ray runner: a deferred map fans out to the cluster's worker processes."""

from __future__ import annotations

from taskyard.testing.deferred_fanout import check_worker_fans_out
from taskyard_ray import RayTaskRunner


class TestDeferredOnRay:
    def test_a_worker_runs_its_claims_on_the_ray_workers(self, ray_address: str) -> None:
        """Deferred runs claimed by one worker run on the Ray cluster's processes; the producer reads every result."""
        check_worker_fans_out(RayTaskRunner(address=ray_address))
