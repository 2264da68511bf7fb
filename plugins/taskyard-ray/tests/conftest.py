"""Fixtures: a real two-node Ray cluster, started with ``ray start`` for the session.

The processes are started and stopped by ``ray_processes`` (127.0.0.1 only;
stopped by pid, never ``ray stop``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_processes import RayCluster, free_port, tempfile_dir

HERE = Path(__file__).resolve().parent
# Test modules define tasks; Ray workers must import them by name.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# The test cluster has no auth token; drivers must not ask for one.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.pop("RAY_ADDRESS", None)
# On a busy machine a node's agent can take long to start; the raylet must not give up on it.
os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")


@pytest.fixture(autouse=True)
def _taskyard_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own TASKYARD_HOME."""
    home = tmp_path_factory.mktemp("taskyard-home")
    monkeypatch.setenv("TASKYARD_HOME", str(home))
    monkeypatch.delenv("TASKYARD_TASK_RUNNER", raising=False)
    return home


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head (2 CPUs, a Ray Client server) and a second node (1 CPU, 1 declared GPU, custom resources "special" and "contract_widget")."""
    root = Path(tempfile_dir())
    logs = root / "logs"  # not under pytest's basetemp: other sessions prune it
    logs.mkdir()
    port = free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", root, logs)
    try:
        cluster.start_head(port, client_port=free_port())
        cluster.wait_for_nodes(1)
        cluster.add_node("--num-cpus=1", "--num-gpus=1", '--resources={"special": 2, "contract_widget": 2}', name="gpu-node")
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address(ray_cluster: RayCluster) -> str:
    return ray_cluster.address


@pytest.fixture(scope="session")
def ray_client_address(ray_cluster: RayCluster) -> str:
    """``ray://127.0.0.1:PORT``: the session cluster's Ray Client server."""
    assert ray_cluster.client_address is not None
    return ray_cluster.client_address


@pytest.fixture(scope="class")
def connected(ray_address: str) -> Iterator[Any]:
    """One connection to the session's cluster while the class runs (each flow run's runner shares it)."""
    from taskyard_ray import RayTaskRunner

    with RayTaskRunner(address=ray_address) as owner:
        yield owner
