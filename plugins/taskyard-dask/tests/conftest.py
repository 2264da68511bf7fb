"""Fixtures: a real Dask scheduler and workers, started as subprocesses for the session.

Everything binds 127.0.0.1. Every process started here is stopped at the end
by pid (terminate, then kill after a timeout), including the worker processes
that ``dask worker --nworkers 2`` forks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dask_processes import free_port as _free_port
from dask_processes import stop_processes as _stop
from dask_processes import wait_for_workers as _wait_for_workers

HERE = Path(__file__).resolve().parent
# Test modules define tasks; workers must import them by name.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TASKYARD_HOME", tempfile.mkdtemp(prefix="taskyard-dask-tests-"))


@pytest.fixture(scope="session", autouse=True)
def _forked_local_workers() -> Iterator[None]:
    """LocalClusters started by the tests fork their worker processes from a forkserver.

    With Dask's default (spawn) each worker process imports distributed and
    taskyard anew, which made starting and closing a runner-started cluster
    the largest cost of the suite; distributed's own test suite uses a
    forkserver for the same reason. What users get by default — spawned
    workers, a script without a ``__main__`` guard, signals, shutdown noise —
    is tested by the tests that run flows in their own processes, which do not
    inherit this setting.
    """
    import dask

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        yield


@pytest.fixture(autouse=True)
def _taskyard_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own TASKYARD_HOME (workers started during the test inherit it)."""
    home = tmp_path_factory.mktemp("taskyard-home")
    monkeypatch.setenv("TASKYARD_HOME", str(home))
    monkeypatch.delenv("TASKYARD_TASK_RUNNER", raising=False)
    return home






class DaskProcesses:
    """A scheduler and workers running as subprocesses of the test session."""

    def __init__(self, address: str, scheduler: subprocess.Popen[bytes], workers: subprocess.Popen[bytes]) -> None:
        self.address = address
        self.scheduler = scheduler
        self.workers = workers

    def all_pids(self) -> list[int]:
        pids = []
        for popen in (self.workers, self.scheduler):
            try:
                proc = psutil.Process(popen.pid)
                pids += [p.pid for p in proc.children(recursive=True)] + [proc.pid]
            except psutil.NoSuchProcess:
                pass
        return pids


@contextlib.contextmanager
def _start_cluster(logs: Path, worker_args: list[str], count: int) -> Iterator[DaskProcesses]:
    """A ``dask scheduler`` and ``dask worker ... worker_args`` on loopback, stopped by pid at the end."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        # A worker that dies takes its task with it at once (no Dask-side retry):
        # taskyard's own retries decide, as with the runner's LocalCluster.
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    }
    with open(logs / "scheduler.log", "wb") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    with open(logs / "workers.log", "wb") as out:
        workers = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--no-dashboard",
             *worker_args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    started = DaskProcesses(address, scheduler, workers)
    try:
        _wait_for_workers(address, count, scheduler, workers)
        yield started
    finally:
        procs = []
        for pid in started.all_pids():
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        _stop(procs)
        for popen in (workers, scheduler):
            popen.wait(timeout=5)


@pytest.fixture(scope="session")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """``dask scheduler`` plus ``dask worker --nworkers 2 --nthreads 1`` on loopback."""
    logs = tmp_path_factory.mktemp("dask-logs")
    with _start_cluster(logs, ["--nworkers", "2", "--nthreads", "1", "--memory-limit", "0"], 2) as started:
        yield started


@pytest.fixture(scope="session")
def dask_resource_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second scheduler whose one worker (2 threads, 1 GiB) declares GPU=1 and contract_widget=2."""
    logs = tmp_path_factory.mktemp("dask-resource-logs")
    args = ["--nworkers", "1", "--nthreads", "2", "--memory-limit", "1GiB", "--resources", "GPU=1 contract_widget=2"]
    with _start_cluster(logs, args, 1) as started:
        yield started.address




@pytest.fixture(scope="session")
def dask_address(dask_processes: DaskProcesses) -> str:
    return dask_processes.address


@pytest.fixture
def extra_resource_worker(dask_resource_address: str, tmp_path: Path) -> Iterator[None]:
    """A second worker, with only contract_other=1, joined to the resource cluster for one test."""
    with open(tmp_path / "worker.log", "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", dask_resource_address, "--host", "127.0.0.1",
             "--nthreads", "1", "--no-dashboard", "--resources", "contract_other=1"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
    try:
        _wait_for_workers(dask_resource_address, 2, popen)
        yield
    finally:
        proc = psutil.Process(popen.pid)
        _stop([*proc.children(recursive=True), proc])
        popen.wait(timeout=5)
