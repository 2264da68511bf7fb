"""pytest plugin (entry point ``pytest11``): a ``task_runner`` fixture over every runner.

Tests that take ``task_runner`` run once per registered runner whose package
is installed; runners whose plugin is missing are skipped with the install
hint as the reason. Set ``TASKYARD_TEST_RUNNERS=threads,dask`` to choose.

It also provides ``flow_process`` (taskyard.testing.faults): flow scripts run
as real processes for fault tests — signalled, then checked for survivors.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from taskyard.testing.faults import flow_process

__all__ = ("pytest_generate_tests", "task_runner", "flow_process")


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
