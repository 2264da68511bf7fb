"""pytest plugin (entry point ``pytest11``): a ``task_runner`` fixture over every runner.

Tests that take ``task_runner`` run once per registered runner whose package
is installed; runners whose plugin is missing are skipped with the install
hint as the reason. Set ``TASKYARD_TEST_RUNNERS=threads,dask`` to choose.

It also provides ``flow_process`` (taskyard.testing.faults): flow scripts run
as real processes for fault tests — signalled, then checked for survivors;
and ``host_network`` (taskyard.testing.netns): four simulated hosts in Linux
network namespaces for multi-host tests, skipped with the reason where they
cannot be built (not root, no ``ip``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from taskyard.testing.faults import flow_process
from taskyard.testing.netns import HostNetwork, unavailable_reason

__all__ = ("pytest_configure", "pytest_generate_tests", "task_runner", "flow_process", "host_network")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multihost: clusters across simulated hosts in Linux network namespaces (needs root and ip)"
    )


def _names() -> list[str]:
    chosen = os.environ.get("TASKYARD_TEST_RUNNERS")
    if chosen:
        return [n.strip() for n in chosen.split(",") if n.strip()]
    from taskyard.runners.registry import registry

    return registry.names()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "task_runner" in metafunc.fixturenames:
        metafunc.parametrize("task_runner", _names(), ids=str, indirect=True)


@pytest.fixture
def task_runner(request: pytest.FixtureRequest) -> Any:
    """An unstarted instance of the runner named by the parameter."""
    from taskyard.exceptions import RunnerNotFound
    from taskyard.runners.registry import registry

    try:
        cls = registry.get(request.param)
    except RunnerNotFound as exc:
        pytest.skip(f"runner {request.param!r} unavailable: {exc}")
    return cls()


@pytest.fixture(scope="module")
def host_network() -> Iterator[HostNetwork]:
    """Simulated hosts flow, head, worker-a and worker-b (one module's tests share them).

    Torn down at the end of the module, also when a test failed: every
    process in the hosts is stopped by pid, then the namespaces are deleted.
    """
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with HostNetwork() as net:
        yield net
