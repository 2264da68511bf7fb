"""The runner conformance suite over DaskTaskRunner, against a real scheduler and workers."""

from __future__ import annotations

import pytest

from taskyard.testing import TaskRunnerContract
from taskyard_dask import DaskTaskRunner


class TestDaskTaskRunnerOnRunningCluster(TaskRunnerContract):
    """Address mode: every flow run connects to the session's scheduler."""

    @pytest.fixture
    def runner(self, dask_address: str) -> DaskTaskRunner:
        return DaskTaskRunner(address=dask_address)

    @pytest.fixture
    def resource_runner(self, dask_resource_address: str) -> DaskTaskRunner:
        """A cluster whose only worker has GPU=1 and contract_widget=2: the contract's capacity."""
        return DaskTaskRunner(address=dask_resource_address)


class TestDaskTaskRunnerOnLocalCluster(TaskRunnerContract):
    """Default mode: every flow run starts (and closes) its own LocalCluster."""

    @pytest.fixture
    def runner(self) -> DaskTaskRunner:
        return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})

    @pytest.fixture
    def resource_runner(self) -> DaskTaskRunner:
        """A LocalCluster of one worker with GPU=1 and contract_widget=2: the contract's capacity."""
        resources = {"GPU": 1, "contract_widget": 2}
        kwargs = {"n_workers": 1, "threads_per_worker": 2, "processes": True, "resources": resources}
        return DaskTaskRunner(cluster_kwargs=kwargs)
