"""The multi-host contract: the checks every runner that joins a cluster across hosts passes.

:class:`TaskRunnerHostsContract` holds them, as :class:`TaskRunnerContract`
holds the core suite: a runner's multi-host test module subclasses it, names
its cluster (:mod:`taskyard.testing.hostclusters`) and sets the few
attributes where its backend differs::

    class TestDaskAcrossHosts(TaskRunnerHostsContract):
        cluster_class = DaskOnHosts

The tests share one cluster (class-scoped) and run in the order written:
the three that break a host come last, each rebuilding only what it broke
for the next; the head's loss, after which nothing runs, is the last. Every
flow runs as a process on the flow host (:mod:`taskyard.testing.hostflows`)
and reports in JSON; figures are printed (``pytest -s``). The helpers below
read those reports and watch a map reach a host. Needs root and ``ip``
(the ``host_network`` fixture skips with that reason where they are missing).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar, TypeVar

import pytest

from taskyard.testing.hostclusters import FlowReport, HostCluster, Spawned
from taskyard.testing.netns import HostNetwork

C = TypeVar("C", bound=HostCluster)

# The full 100,000-task map takes minutes on 2 cores: CI runs a smaller one;
# scripts/multihost.py runs the full size by hand.
SCALE_TASKS = int(os.environ.get("TASKYARD_MULTIHOST_SCALE", "2000"))

__all__ = (
    "TaskRunnerHostsContract",
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
def started_cluster(
    kind: type[C], net: HostNetwork, tmp_path_factory: pytest.TempPathFactory, name: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[C]:
    """A ``kind`` cluster started on ``net`` with its own logs and TASKYARD_HOME; stopped on exit.

    ``env`` is added to the environment of every process of the cluster and
    of every flow run on it (a backend's timing settings, say).
    """
    logs = tmp_path_factory.mktemp(f"{name}-hosts-logs")
    home = tmp_path_factory.mktemp(f"{name}-hosts-home")
    cluster = kind(net, logs)
    cluster.env.update(env or {})
    cluster.env["TASKYARD_HOME"] = str(home)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def show_report(backend: str, name: str, report: FlowReport) -> None:
    """Print a flow's report (seen with ``pytest -s``), without its stderr and raw counters."""
    shown = {k: v for k, v in report.items() if k not in ("stderr", "flow_host", "stacks")}
    print(f"\n[{backend} multihost] {name}: {shown}")


def why(report: FlowReport) -> str:
    """What a failed assertion on ``report`` shows: the end of the flow's stderr, and its stacks if they were taken."""
    stacks = str(report.get("stacks") or "")
    return str(report["stderr"])[-3000:] + (f"\n\nthe flow's threads while it ran on:\n{stacks}" if stacks else "")


def assert_completed(report: FlowReport) -> None:
    """The flow process exited 0 and its flow run Completed."""
    assert report["exit_code"] == 0 and report["flow_state"] == "COMPLETED", why(report)


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


# The maps that lose a host: long enough for runs to be in flight on the host when it goes,
# short enough that the survivor soon finishes the rest alone.
LOSS_MAP_SIZE = 10
LOSS_MAP_SECONDS = 2.0

_CORE_CONTRACT = """
import pytest
from taskyard.runners.registry import registry
from taskyard.testing.conformance import TaskRunnerCoreContract


def make_runner():
    return registry.get({name!r})(**{kwargs!r})
{shared}

class TestCoreOnHosts(TaskRunnerCoreContract):
    @pytest.fixture
    def runner(self):
        return make_runner()
"""

# One connection for the whole module: each test's runner finds it and uses it.
_SHARED_CONNECTION = """

@pytest.fixture(scope="module", autouse=True)
def connected():
    with make_runner():
        yield
"""


def _map_running_on(cluster: HostCluster, role: str, tmp_path: Path) -> tuple[Spawned, Path, set[int]]:
    """A map of slow runs with retries, once a run is in flight on host ``role``: the flow, its marks, the host's pids."""
    marks = tmp_path / "marks"
    marks.mkdir()
    spawned = cluster.spawn_flow("slowmap", size=LOSS_MAP_SIZE, seconds=LOSS_MAP_SECONDS, retries=2, marks=str(marks))
    wait_until_running_on(marks, lambda: pids_of(cluster, role))
    return spawned, marks, pids_of(cluster, role)


def _finish(
    cluster: HostCluster, spawned: Spawned, since: float, bound: float, name: str, stuck_after: float | None = None
) -> FlowReport:
    """The report of a flow that lost something at ``since`` (waited for up to ``bound`` + 120 s), with how long after.

    A flow still running ``stuck_after`` s after the event (default:
    ``bound``) has its threads' stacks taken (the report's ``stacks``), which
    the assertions then show: where a flow that does not end waits.
    """
    waited = time.monotonic() - since
    stuck_after = bound if stuck_after is None else stuck_after
    report = cluster.finish_flow(spawned, timeout=bound + 120 - waited, stacks_after=max(1.0, stuck_after - waited))
    report["seconds_after_event"] = round(time.monotonic() - since, 1)
    show_report(cluster.runner, name, report)
    return report


@pytest.mark.multihost
class TaskRunnerHostsContract:
    """The multi-host checks: the flow on its own host, a scheduler / head and two worker hosts.

    Set ``cluster_class``; the other attributes and :meth:`after_heal` are
    where backends may differ.

    Attributes:
        cluster_class: The cluster to start on the simulated hosts.
        cluster_env: Environment for every process of the cluster and every
            flow run (a backend's documented settings, such as shorter
            timeouts, so a lost or cut-off host is noticed sooner).
        shares_connection: The core suite's tests use one connection to the
            cluster, opened for the module (for a backend whose runner uses
            a connection it finds open), instead of one per test.
        mapreduce_size: Mapped tasks of the map-reduce.
        mapreduce_nbytes: Bytes each mapped task of the map-reduce returns.
        lost_head_says: Words the flow's message must contain when the
            scheduler / head is lost.
        loss_bound_s: A lost worker host or head: the flow ends within this.
        partition_bound_s: A cut-off worker host: the flow ends within this.
    """

    cluster_class: ClassVar[type[HostCluster]]
    cluster_env: ClassVar[Mapping[str, str]] = {}
    shares_connection: ClassVar[bool] = False
    mapreduce_size: ClassVar[int] = 1000
    mapreduce_nbytes: ClassVar[int] = 100_000
    lost_head_says: ClassVar[str] = "scheduler"
    loss_bound_s: ClassVar[float] = 150.0
    partition_bound_s: ClassVar[float] = 150.0

    def after_heal(self, cluster: HostCluster) -> None:
        """Once a cut-off worker host's link is back: whatever the backend needs before the next flow run."""

    @pytest.fixture(scope="class")
    @classmethod
    def cluster(cls, host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCluster]:
        """The cluster across the hosts, shared by the class's tests."""
        kind = cls.cluster_class
        with started_cluster(kind, host_network, tmp_path_factory, kind.runner, cls.cluster_env) as started:
            yield started

    def test_core_contract_passes_with_the_flow_on_its_own_host(self, cluster: HostCluster, tmp_path: Path) -> None:
        """The conformance suite's core tests, run by a pytest on the flow host against the remote cluster."""
        module = tmp_path / "test_core_on_hosts.py"
        shared = _SHARED_CONNECTION if self.shares_connection else ""
        module.write_text(_CORE_CONTRACT.format(name=cluster.runner, kwargs=cluster.runner_kwargs(), shared=shared))
        done = cluster.net["flow"].run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(module)],
            timeout=900, env=cluster.env,
        )
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
        print(f"\n[{cluster.runner} multihost] core contract on the flow host: {tail}")
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in tail and "failed" not in tail

    def test_a_chain_of_large_results_stays_on_the_cluster(self, cluster: HostCluster) -> None:
        """200 chained tasks of 1 MB each: under 5% of the 200 MB crosses the flow host's interface."""
        report = cluster.run_flow("chain", timeout=600, size=200, nbytes=1_000_000)
        show_report(cluster.runner, "chain 200 x 1 MB", report)
        assert_completed(report)
        assert report["task_states"] == {"COMPLETED/Completed": 201}
        assert report["flow_host_bytes"] < 0.05 * 200_000_000

    def test_a_map_feeding_a_reduce_stays_on_the_cluster(self, cluster: HostCluster) -> None:
        """``mapreduce_size`` tasks of ``mapreduce_nbytes`` each into one reduce: under 5% of it crosses the flow host."""
        size, nbytes = self.mapreduce_size, self.mapreduce_nbytes
        report = cluster.run_flow("mapreduce", timeout=600, size=size, nbytes=nbytes)
        show_report(cluster.runner, f"map {size} x {nbytes // 1000} kB -> reduce", report)
        assert_completed(report)
        assert report["result"] == size * nbytes
        assert report["task_states"] == {"COMPLETED/Completed": size + 1}
        assert report["flow_host_bytes"] < 0.05 * size * nbytes

    def test_a_large_map_completes_across_both_worker_hosts(self, cluster: HostCluster) -> None:
        """A map of SCALE_TASKS tiny tasks completes; tasks/s and the flow's peak RSS are reported."""
        report = cluster.run_flow("scale", timeout=1800, size=SCALE_TASKS)
        report["tasks_per_s"] = round(SCALE_TASKS / report["seconds"], 1)
        show_report(cluster.runner, f"map of {SCALE_TASKS} tasks", report)
        assert_completed(report)
        assert report["result"] == sum(i * i for i in range(SCALE_TASKS))
        assert report["task_states"] == {"COMPLETED/Completed": SCALE_TASKS}

    def test_a_lost_worker_host_is_retried_and_the_flow_completes(self, cluster: HostCluster, tmp_path: Path) -> None:
        """Every process of worker-a killed mid-map: its runs run again on worker-b; all complete, none left Running."""
        spawned, marks, victims = _map_running_on(cluster, "worker-a", tmp_path)
        since = time.monotonic()
        killed = cluster.net["worker-a"].kill()
        assert victims and victims <= set(killed)
        report = _finish(cluster, spawned, since, self.loss_bound_s, "worker host lost mid-map")
        try:
            assert_completed(report)
            assert report["task_states"] == {"COMPLETED/Completed": LOSS_MAP_SIZE}
            # The runs lost with the host ran again on the other. (Run counts need not show it: a
            # lost batch's calls that had not started are placed again without losing an attempt.)
            assert runs_started_again(marks, victims), sorted(p.name for p in marks.iterdir())
            assert report["seconds_after_event"] < self.loss_bound_s
            assert_nothing_running(report)
        finally:
            cluster.start_worker("worker-a")
            cluster.wait_for_workers(2)

    def test_a_partitioned_worker_host_never_hangs_the_flow(self, cluster: HostCluster, tmp_path: Path) -> None:
        """worker-a's link down mid-map: its runs start again elsewhere, the flow ends in time; link up, a new run works."""
        spawned, marks, cut_off = _map_running_on(cluster, "worker-a", tmp_path)
        since = time.monotonic()
        cluster.net.partition("worker-a")
        try:
            report = _finish(cluster, spawned, since, self.partition_bound_s, "worker host partitioned mid-map")
            assert report["exit_code"] == 0, why(report)
            assert report["seconds_after_event"] < self.partition_bound_s
            assert sum(report["task_states"].values()) == LOSS_MAP_SIZE
            assert_nothing_running(report)
            # The run cut off with the host was not left waiting: it was given up and placed again.
            assert runs_started_again(marks, cut_off), sorted(p.name for p in marks.iterdir())
        finally:
            cluster.net.heal("worker-a")
        healed_at = time.monotonic()
        self.after_heal(cluster)
        # Retries: the backend may still give up on the cut-off host while this runs.
        after = cluster.run_flow("slowmap", timeout=300, size=40, seconds=0.05, retries=3, marks=str(tmp_path))
        after["seconds_after_heal"] = round(time.monotonic() - healed_at, 1)
        show_report(cluster.runner, "new flow run after the link came back", after)
        assert_completed(after)
        assert after["result"] == sum(range(40))

    def test_a_lost_head_ends_the_flow_with_a_clear_error(self, cluster: HostCluster, tmp_path: Path) -> None:
        """The head host killed mid-map: outstanding runs end Crashed in time, the flow fails naming what was lost."""
        marks = tmp_path / "marks"
        marks.mkdir()
        spawned = cluster.spawn_flow("slowmap", size=30, seconds=2.0, retries=0, marks=str(marks))
        wait_for_marks(marks, 2)
        since = time.monotonic()
        assert cluster.net["head"].kill()
        # Ray ends a driver 60 s after its head went silent: a flow still running at 45 s is stuck.
        report = _finish(cluster, spawned, since, self.loss_bound_s, "head host lost mid-map", stuck_after=45.0)
        # Exit 0 with a report: the flow ended on its own, with a state recorded.
        assert report["exit_code"] == 0, why(report)
        assert report["flow_state"] in ("FAILED", "CRASHED")
        assert self.lost_head_says in (report["message"] or ""), report["message"]
        assert report["seconds_after_event"] < self.loss_bound_s
        assert any(k.startswith("CRASHED") for k in report["task_states"]), report["task_states"]
        assert_nothing_running(report)
