"""RayTaskRunner across simulated hosts: the flow, the Ray head and two worker nodes each on a host of their own.

The hosts are Linux network namespaces (taskyard.testing.netns, the
``host_network`` fixture); every flow runs as a process on the flow host
(``ip netns exec``) and reports in JSON. The tests share one cluster and
run in file order: the worker host's loss starts that host's node again;
the partition, after it, brings its host's link back but leaves the node
as Ray left it (only the head's loss, which needs one worker host, comes
after it). A Ray driver
always runs on a node of its cluster, so the flow host runs a node with no
CPUs (no tasks land there) and the flow connects with
``RayTaskRunner(address=HEAD, init_kwargs={"_node_ip_address": FLOW})``.
Figures are printed (``-s``) and recorded in docs/runners/ray.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
import pytest

from taskyard.testing.hostchecks import (
    SCALE_TASKS,
    assert_completed,
    assert_nothing_running,
    pids_of,
    show_report,
    started_cluster,
    wait_for_marks,
    wait_until_running_on,
)
from taskyard.testing.hostclusters import RayOnHosts
from taskyard.testing.netns import HostNetwork

# Minutes, not the suite's default: a cluster starts, and a lost host takes Ray's health checks.
pytestmark = [pytest.mark.multihost, pytest.mark.timeout(1800)]

# A lost host or head must end the flow within this.
BOUND_S = 150.0
# A host cut off: the flow process's keepalive breaks the connection, then Ray fails the run;
# 31-96 s after the cut on the shared 2-core machine (docs/runners/ray.md).
PARTITION_BOUND_S = 210.0


@pytest.fixture(scope="module")
def cluster(host_network: HostNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayOnHosts]:
    """A Ray head (no CPUs) on head, a worker node (1 CPU) on each worker host, a zero-CPU node on flow."""
    with started_cluster(RayOnHosts, host_network, tmp_path_factory, "ray") as started:
        yield started


class TestRayAcrossHosts:
    def test_core_contract_passes_with_the_flow_on_its_own_host(self, cluster: RayOnHosts, tmp_path: Path) -> None:
        """The conformance suite's core tests, run by a pytest on the flow host against the remote cluster."""
        module = tmp_path / "test_core_on_hosts.py"
        module.write_text(CORE_CONTRACT.format(address=cluster.address, init_kwargs=cluster.runner_kwargs()["init_kwargs"]))
        done = cluster.net["flow"].run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(tmp_path), str(module)],
            timeout=900, env=cluster.env,
        )
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
        print(f"\n[ray multihost] core contract on the flow host: {tail}")
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in tail and "failed" not in tail

    def test_a_chain_of_large_results_stays_on_the_cluster(self, cluster: RayOnHosts) -> None:
        """200 chained tasks of 1 MB each: under 5% of the 200 MB crosses the flow host's interface."""
        report = cluster.run_flow("chain", timeout=600, size=200, nbytes=1_000_000)
        show_report("ray", "chain 200 x 1 MB", report)
        assert_completed(report)
        assert report["task_states"] == {"COMPLETED/Completed": 201}
        assert report["flow_host_bytes"] < 0.05 * 200_000_000

    def test_a_map_feeding_a_reduce_stays_on_the_cluster(self, cluster: RayOnHosts) -> None:
        """1,000 mapped tasks of 200 kB each into one reduce: under 5% of the 200 MB crosses the flow host.

        200 kB, not 100 kB: Ray returns an object under 100 KiB (its
        ``max_direct_call_object_size``) to its owner — the flow process — by
        design; docs/runners/ray.md gives the figure for 100 kB results.
        """
        report = cluster.run_flow("mapreduce", timeout=600, size=1000, nbytes=200_000)
        show_report("ray", "map 1000 x 200 kB -> reduce", report)
        assert_completed(report)
        assert report["result"] == 200_000_000
        assert report["task_states"] == {"COMPLETED/Completed": 1001}
        assert report["flow_host_bytes"] < 0.05 * 200_000_000

    def test_a_large_map_completes_across_both_worker_hosts(self, cluster: RayOnHosts) -> None:
        """A map of SCALE_TASKS tiny tasks completes; tasks/s and the flow's peak RSS are reported."""
        report = cluster.run_flow("scale", timeout=1800, size=SCALE_TASKS)
        report["tasks_per_s"] = round(SCALE_TASKS / report["seconds"], 1)
        show_report("ray", f"map of {SCALE_TASKS} tasks", report)
        assert_completed(report)
        assert report["result"] == sum(i * i for i in range(SCALE_TASKS))
        assert report["task_states"] == {"COMPLETED/Completed": SCALE_TASKS}

    def test_a_lost_worker_host_is_retried_and_the_flow_completes(self, cluster: RayOnHosts, tmp_path: Path) -> None:
        """Every process of worker-a killed mid-map: its runs run again on worker-b; all complete, none left Running."""
        marks = tmp_path / "marks"
        marks.mkdir()
        spawned = cluster.spawn_flow("slowmap", size=30, seconds=2.0, retries=2, marks=str(marks))
        wait_for_marks(marks, 2)
        # A run is in flight there: the loss takes it.
        wait_until_running_on(marks, lambda: pids_of(cluster, "worker-a"))
        victims = pids_of(cluster, "worker-a")
        lost_at = time.monotonic()
        killed = cluster.net["worker-a"].kill()
        assert victims and victims <= set(killed)
        report = cluster.finish_flow(spawned, timeout=BOUND_S + 120)
        report["seconds_after_loss"] = round(time.monotonic() - lost_at, 1)
        show_report("ray", "worker host lost mid-map", report)
        try:
            assert_completed(report)
            assert report["task_states"] == {"COMPLETED/Completed": 30}
            assert int(report["run_counts"].get("2", 0)) >= 1  # the lost runs ran a second time
            assert report["seconds_after_loss"] < BOUND_S
            assert_nothing_running(report)
        finally:
            cluster.start_worker("worker-a")
            cluster.wait_for_workers(2)

    def test_a_partitioned_worker_host_never_hangs_the_flow(self, cluster: RayOnHosts, tmp_path: Path) -> None:
        """worker-a's link down mid-map: the flow ends within PARTITION_BOUND_S; link up, a new flow run works."""
        marks = tmp_path / "marks"
        marks.mkdir()
        spawned = cluster.spawn_flow("slowmap", size=30, seconds=1.0, retries=2, marks=str(marks))
        wait_for_marks(marks, 2)
        wait_until_running_on(marks, lambda: pids_of(cluster, "worker-a"))
        cut_at = time.monotonic()
        cluster.net.partition("worker-a")
        try:
            report = cluster.finish_flow(spawned, timeout=PARTITION_BOUND_S + 120)
            report["seconds_after_cut"] = round(time.monotonic() - cut_at, 1)
            show_report("ray", "worker host partitioned mid-map", report)
            assert report["exit_code"] == 0, report["stderr"][-3000:]
            assert report["seconds_after_cut"] < PARTITION_BOUND_S
            assert sum(report["task_states"].values()) == 30
            assert_nothing_running(report)
            # The run cut off with the host was failed by Ray (not left waiting) and placed again.
            assert "NodeDiedError" in report["stderr"] or "CRASHED/Crashed" in report["task_states"], report["stderr"][-3000:]
        finally:
            cluster.net.heal("worker-a")
        healed_at = time.monotonic()
        # Retries: the head may still declare the cut-off node dead (after ~65 s) while this runs.
        after = cluster.run_flow("slowmap", timeout=300, size=40, seconds=0.05, retries=3, marks=str(tmp_path))
        after["seconds_after_heal"] = round(time.monotonic() - healed_at, 1)
        show_report("ray", "new flow run after the link came back", after)
        assert_completed(after)
        assert after["result"] == sum(range(40))

    def test_a_lost_head_ends_the_flow_with_a_clear_error(self, cluster: RayOnHosts, tmp_path: Path) -> None:
        """The head host killed mid-map: outstanding runs end Crashed within BOUND_S, the flow fails naming the head."""
        marks = tmp_path / "marks"
        marks.mkdir()
        spawned = cluster.spawn_flow("slowmap", size=30, seconds=2.0, retries=0, marks=str(marks))
        wait_for_marks(marks, 2)
        lost_at = time.monotonic()
        assert cluster.net["head"].kill()
        report = cluster.finish_flow(spawned, timeout=BOUND_S + 120)
        report["seconds_after_loss"] = round(time.monotonic() - lost_at, 1)
        show_report("ray", "head host lost mid-map", report)
        # Exit 0 with a report: the flow ended on its own, before Ray's 60 s end of the process.
        assert report["exit_code"] == 0, report["stderr"][-3000:]
        assert report["flow_state"] in ("FAILED", "CRASHED")
        assert "Ray head" in (report["message"] or ""), report["message"]
        assert report["seconds_after_loss"] < BOUND_S
        assert any(k.startswith("CRASHED") for k in report["task_states"]), report["task_states"]
        assert_nothing_running(report)


# One connection to the cluster for the whole class (as test_ray_conformance.py): each test's
# runner finds Ray initialised and uses it, instead of joining and leaving the cluster per test.
CORE_CONTRACT = '''
import pytest
from taskyard.testing.conformance import TaskRunnerCoreContract
from taskyard_ray import RayTaskRunner


@pytest.fixture(scope="class")
def connected():
    with RayTaskRunner(address={address!r}, init_kwargs={init_kwargs!r}) as owner:
        yield owner


@pytest.mark.usefixtures("connected")
class TestRayCoreOnHosts(TaskRunnerCoreContract):
    @pytest.fixture
    def runner(self):
        return RayTaskRunner(address={address!r}, init_kwargs={init_kwargs!r})
'''
