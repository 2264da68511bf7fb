"""A task worker on the Dask runner: a deferred map fans out to the cluster's worker processes."""

from __future__ import annotations

from taskyard.testing.deferred_fanout import check_worker_fans_out
from taskyard_dask import DaskTaskRunner


class TestDeferredOnDask:
    def test_a_worker_runs_its_claims_on_the_dask_workers(self, dask_address: str) -> None:
        """Deferred runs claimed by one worker run on the Dask cluster's processes; the producer reads every result."""
        check_worker_fans_out(DaskTaskRunner(address=dask_address))
