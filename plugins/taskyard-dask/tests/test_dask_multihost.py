"""DaskTaskRunner across simulated hosts: the flow, the scheduler and two workers each on a host of their own.

The checks are the multi-host contract (taskyard.testing.hostchecks); the
figures they print (``-s``) are in docs/runners/dask.md.
"""

from __future__ import annotations

import pytest

from taskyard.testing.hostchecks import TaskRunnerHostsContract
from taskyard.testing.hostclusters import DaskOnHosts, HostCluster

# Minutes, not the suite's default: a cluster starts, and a lost host takes Dask's timeouts.
pytestmark = pytest.mark.timeout(1800)


class TestDaskAcrossHosts(TaskRunnerHostsContract):
    cluster_class = DaskOnHosts
    # Dask's own setting: a cut-off connection is given up after 12 s (the least it takes), not 30.
    cluster_env = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "12s"}

    def after_heal(self, cluster: HostCluster) -> None:
        """A Dask worker cut off from its scheduler closes itself (nanny too): start it again, as a supervisor would."""
        if not cluster.net["worker-a"].pids():
            cluster.start_worker("worker-a")
        cluster.wait_for_workers(2)
