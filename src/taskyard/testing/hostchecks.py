"""Checks the multi-host tests share: reading a flow's report, and waiting for a map to reach a host.

Used by the Dask and Ray multi-host tests (``pytest -m multihost``); the
flows they run live in :mod:`taskyard.testing.hostflows`, the clusters in
:mod:`taskyard.testing.hostclusters`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from taskyard.testing.hostclusters import FlowReport, HostCluster
from taskyard.testing.netns import HostNetwork

if TYPE_CHECKING:
    import pytest

C = TypeVar("C", bound=HostCluster)

# The full 100,000-task map takes minutes on 2 cores: CI runs a smaller one;
# scripts/multihost.py runs the full size by hand.
SCALE_TASKS = int(os.environ.get("TASKYARD_MULTIHOST_SCALE", "2000"))

__all__ = (
    "SCALE_TASKS",
    "started_cluster",
    "show_report",
    "assert_completed",
    "assert_nothing_running",
    "wait_for_marks",
    "wait_until_running_on",
    "pids_of",
    "runs_started_again",
)


@contextlib.contextmanager
def started_cluster(kind: type[C], net: HostNetwork, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[C]:
    """A ``kind`` cluster started on ``net`` with its own logs and TASKYARD_HOME; stopped on exit."""
    logs = tmp_path_factory.mktemp(f"{name}-hosts-logs")
    home = tmp_path_factory.mktemp(f"{name}-hosts-home")
    cluster = kind(net, logs)
    cluster.env["TASKYARD_HOME"] = str(home)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def show_report(backend: str, name: str, report: FlowReport) -> None:
    """Print a flow's report (seen with ``pytest -s``), without its stderr and raw counters."""
    shown = {k: v for k, v in report.items() if k not in ("stderr", "flow_host")}
    print(f"\n[{backend} multihost] {name}: {shown}")


def assert_completed(report: FlowReport) -> None:
    """The flow process exited 0 and its flow run Completed."""
    assert report["exit_code"] == 0 and report["flow_state"] == "COMPLETED", report["stderr"][-3000:]


def assert_nothing_running(report: FlowReport) -> None:
    """Every task run of the flow run ended: none is left Pending or Running in the store."""
    stuck = {k: v for k, v in report["task_states"].items() if not k.startswith(("COMPLETED", "FAILED", "CRASHED", "CANCELLED"))}
    assert stuck == {}, f"task runs left unfinished in the store: {report['task_states']}"


def wait_for_marks(marks: Path, count: int, timeout: float = 120) -> list[str]:
    """Until ``count`` runs of a map left their start marks in ``marks``; their names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.name for p in marks.iterdir()]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"the map did not get under way: {len(list(marks.iterdir()))} of {count} runs started")


def wait_until_running_on(marks: Path, pids: Callable[[], set[int]], timeout: float = 120) -> None:
    """Until a run started (its mark, ``<index>-<pid>-<count>``) under a second ago in a process of ``pids()``.

    ``pids`` is asked again on every look: a Ray node starts its worker
    processes only when runs arrive, so they are not there beforehand.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = pids()
        for mark in marks.iterdir():
            if int(mark.name.split("-")[1]) in current and time.time() - mark.stat().st_mtime < 1.0:
                return
        time.sleep(0.05)
    raise TimeoutError("no run started on the host to be lost")


def pids_of(cluster: HostCluster, role: str) -> set[int]:
    """The processes running on host ``role`` now."""
    return set(cluster.net[role].pids())


def runs_started_again(marks: Path, lost: set[int]) -> set[str]:
    """The map indexes that started in one of the ``lost`` processes and then again in another."""
    starts = [name.split("-")[:2] for name in (p.name for p in marks.iterdir())]
    on_lost = {index for index, pid in starts if int(pid) in lost}
    elsewhere = {index for index, pid in starts if int(pid) not in lost}
    return on_lost & elsewhere
