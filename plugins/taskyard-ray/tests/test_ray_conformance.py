"""The runner conformance suite over RayTaskRunner, against real Ray processes.

Starting Ray costs seconds, so each class keeps one Ray up while its tests
run: a RayTaskRunner started for the class (local mode: it starts Ray;
address and Ray Client modes: it connects), and the runner of every flow run in the tests
uses that Ray — the way the runner of a subflow shares its parent's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskyard.testing import TaskRunnerContract
from taskyard.testing.conformance import TaskRunnerCoreContract
from taskyard.testing.failures import TaskRunnerFailureContract
from taskyard.testing.policy_contract import TaskRunnerPolicyContract
from taskyard.testing.resource_contract import TaskRunnerResourceContract
from taskyard_ray import RayTaskRunner


@pytest.fixture(scope="class")
def local_ray() -> Iterator[RayTaskRunner]:
    """A local Ray started by a RayTaskRunner, up while the class runs."""
    capacity = {"num_cpus": 2, "num_gpus": 1, "resources": {"contract_widget": 2}}  # the resource contract's
    with RayTaskRunner(init_kwargs=capacity) as owner:
        assert owner.connection is not None and owner.connection.started
        yield owner


@pytest.mark.usefixtures("local_ray")
class TestRayTaskRunnerOnLocalRay(TaskRunnerContract):
    """Local mode: a Ray started by the runner (2 CPUs, 1 declared GPU, on 127.0.0.1)."""

    @pytest.fixture
    def runner(self) -> RayTaskRunner:
        return RayTaskRunner()

    @pytest.fixture
    def resource_runner(self, runner: RayTaskRunner) -> RayTaskRunner:
        """Ray declares its resources when it starts: the class's Ray has the contract's capacity."""
        return runner


@pytest.mark.usefixtures("connected")
class TestRayTaskRunnerOnCluster(TaskRunnerContract):
    """Address mode: a two-node cluster started with ``ray start``."""

    @pytest.fixture
    def runner(self, ray_address: str) -> RayTaskRunner:
        return RayTaskRunner(address=ray_address)

    @pytest.fixture
    def resource_runner(self, runner: RayTaskRunner) -> RayTaskRunner:
        """The cluster's second node declares the contract's capacity (gpu 1, contract_widget 2)."""
        return runner


@pytest.fixture(scope="class")
def client_ray(ray_client_address: str) -> Iterator[RayTaskRunner]:
    """One Ray Client connection to the session's cluster while the class runs.

    Ray's client server sometimes loses the driver process it starts for a
    connection (seen in CI: the proxy found it a zombie and aborted the
    connection); the connection is tried up to three times.
    """
    owner = RayTaskRunner(address=ray_client_address)
    for attempt in range(3):
        try:
            owner.start()
            break
        except ConnectionError:
            if attempt == 2:
                raise
            owner = RayTaskRunner(address=ray_client_address)
    with owner:
        assert owner.connection is not None and owner.connection.client == ray_client_address.removeprefix("ray://")
        yield owner


@pytest.mark.ray_client
@pytest.mark.usefixtures("client_ray")
class TestRayTaskRunnerThroughRayClient(
    TaskRunnerCoreContract, TaskRunnerPolicyContract, TaskRunnerResourceContract, TaskRunnerFailureContract
):
    """Ray Client mode: the same cluster through its client server (``ray://``); the driver runs on the head.

    The parts of the contract whose runner calls differ under Ray Client:
    submitting, ObjectRefs as upstreams, completion callbacks, cancellation,
    lost workers, ``ray.put`` once, resources and the log stream. Batching,
    generators, persistence and Prefect fidelity run in the worker's engine
    and take the same calls; the whole contract passed through Ray Client
    too (run by hand; left out here to keep CI short).
    """

    @pytest.fixture
    def runner(self, ray_client_address: str) -> RayTaskRunner:
        return RayTaskRunner(address=ray_client_address)

    @pytest.fixture
    def resource_runner(self, runner: RayTaskRunner) -> RayTaskRunner:
        """The cluster's second node declares the contract's capacity (gpu 1, contract_widget 2)."""
        return runner
