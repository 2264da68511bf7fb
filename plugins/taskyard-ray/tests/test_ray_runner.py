"""RayTaskRunner against real Ray: connecting, data on the cluster, failures, resources, logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from ray_processes import RayCluster, descendants, free_port, stop_tree

from taskyard import flow, get_run_logger, task
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.exceptions import MissingResultError, UnsatisfiableResourcesError
from taskyard.runners import get_runner_class
from taskyard_ray import RayTaskRunner, ray_options

# -- tasks (module level: the Ray workers import this module) ---------------------------


@task
def double(x: int) -> int:
    return 2 * x


@task
def assigned() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"resources": ctx.get_assigned_resources(), "node": ctx.get_node_id()}


@task
def env_var(name: str) -> str | None:
    return os.environ.get(name)


@task
def dies_or_doubles(x: int) -> int:
    if x == 3:
        os._exit(7)
    return 2 * x


@task
def sleeps(seconds: float, path: str) -> str:
    Path(path + ".started").write_text("started")
    time.sleep(seconds)
    Path(path).write_text("finished")
    return path


@task(timeout_seconds=1)
def overruns(path: str) -> None:
    import threading

    Path(path + ".thread").write_text("main" if threading.current_thread() is threading.main_thread() else "other")
    time.sleep(8)
    Path(path).write_text("finished")


@task
def speaks(message: str) -> None:
    get_run_logger().warning(message)


@task(log_prints=True)
def prints(message: str) -> None:
    print(message)


@task(log_prints=True)
def speaks_then_waits(message: str, release: str) -> str:
    get_run_logger().warning(message)
    print(message + " (printed)")
    deadline = time.monotonic() + 120
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released" if Path(release).exists() else "the flow process never saw the records"


class Blob:
    """A value that counts how often it is unpickled in each process."""

    unpickled = 0

    def __init__(self, size: int) -> None:
        self.data = b"b" * size

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_blob, (self.data,)


def _load_blob(data: bytes) -> Blob:
    Blob.unpickled += 1
    blob = Blob.__new__(Blob)
    blob.data = data
    return blob


@task
def make_blob(size: int) -> Blob:
    return Blob(size)


@task
def grow(blob: Blob) -> Blob:
    return Blob(len(blob.data) + 1)


@task
def blob_size(blob: Blob) -> int:
    return len(blob.data)


def _call(t: Any, **params: Any) -> TaskCall[Any]:
    return TaskCall(t, params, TaskRunInfo(os.urandom(16).hex(), f"{t.name}-call", t.name))


def _listening(pids: set[int]) -> list[str]:
    """``ss -ltnp`` lines of the sockets these processes listen on."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _local_address(line: str) -> str:
    return line.split()[3].rsplit(":", 1)[0]


# -- connecting -------------------------------------------------------------------------------


class TestConnecting:
    def test_registered_as_ray(self) -> None:
        """The entry point registers the runner under "ray"."""
        assert get_runner_class("ray") is RayTaskRunner

    def test_import_does_not_import_ray(self) -> None:
        """Importing taskyard_ray does not import ray (the runner does when it starts)."""
        code = "import sys, taskyard_ray; assert 'ray' not in sys.modules, sorted(m for m in sys.modules if 'ray' in m)"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

    def test_address_in_init_kwargs_is_refused(self) -> None:
        """The address goes in address=, not init_kwargs: a clear error says so."""
        with pytest.raises(ValueError, match="address="):
            RayTaskRunner(init_kwargs={"address": "auto"})

    def test_a_ray_client_address_without_a_host_is_refused_at_once(self) -> None:
        """A bare "ray://" names no server: the runner says so when it is made, showing what an address looks like."""
        with pytest.raises(ValueError, match=r"address='ray://'.*'ray://10.0.0.1:10001'"):
            RayTaskRunner(address="ray://")

    def test_local_mode_starts_its_own_ray_on_loopback_and_stops_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No address: a fresh Ray on 127.0.0.1, despite RAY_ADDRESS and a stale cluster file; gone after."""
        import ray

        temp = tempfile.mkdtemp(prefix="tyr-", dir="/tmp")  # Ray's socket paths must stay short
        Path(temp, "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # a dead cluster
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
        runner = RayTaskRunner(init_kwargs={"num_cpus": 1, "_temp_dir": temp})
        before = set(descendants(os.getpid()))  # the session's test cluster, if it runs
        try:
            with runner:
                assert runner.connection is not None and runner.connection.started
                started = set(descendants(os.getpid())) - before
                sockets = _listening(started | {os.getpid()})
                print("\n".join(["listening while the local Ray runs:", *sockets]))
                assert sockets and all(_local_address(s) in ("127.0.0.1", "[::ffff:127.0.0.1]") for s in sockets), sockets
                assert runner.submit(_call(double, x=21)).result(timeout=120) == 42
            assert not ray.is_initialized()
            _, alive = psutil.wait_procs([psutil.Process(p) for p in started if psutil.pid_exists(p)], timeout=30)
            assert not alive, f"processes the runner started outlived it: {alive}"
        finally:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)

    def test_cluster_listens_on_loopback_only(self, ray_cluster: RayCluster) -> None:
        """Every socket the test cluster's processes listen on is bound to 127.0.0.1."""
        sockets = _listening(set(ray_cluster.pids()))
        print("\n".join(["listening while the test cluster runs:", *sockets]))
        assert sockets and all(_local_address(s) in ("127.0.0.1", "[::ffff:127.0.0.1]") for s in sockets), sockets

    def test_address_mode_leaves_the_cluster_running(self, ray_cluster: RayCluster) -> None:
        """With an address the runner connects and disconnects; the cluster's processes stay up."""
        import ray

        daemons = [p for p in map(_process, ray_cluster.pids()) if p is not None and p.name() in ("raylet", "gcs_server")]
        assert daemons

        @flow(task_runner=RayTaskRunner(address=ray_cluster.address))
        def f() -> list[int]:
            return double.map([1, 2, 3]).result()

        assert f() == [2, 4, 6]
        assert not ray.is_initialized()
        assert all(p.is_running() for p in daemons), "the cluster's raylets and GCS must keep running"

    @pytest.mark.ray_client
    def test_a_ray_client_address_connects_on_loopback_and_leaves_the_cluster_running(
        self, ray_cluster: RayCluster
    ) -> None:
        """ray://: the flow runs through the head's client server (every socket on 127.0.0.1), which stays up after."""
        import ray

        assert ray_cluster.client_address is not None
        client_port = ray_cluster.client_address.rpartition(":")[2]
        seen: dict[str, Any] = {}

        @flow(task_runner=RayTaskRunner(address=ray_cluster.client_address))
        def f() -> list[int]:
            seen["client"] = ray.util.client.ray.is_connected()
            seen["sockets"] = _listening(set(ray_cluster.pids()))  # the driver Ray Client started on the head among them
            return double.map([1, 2, 3]).result()

        assert f() == [2, 4, 6]
        print("\n".join(["listening while a Ray Client flow runs:", *seen["sockets"]]))
        assert seen["client"], "the flow must have talked to Ray through Ray Client"
        assert any(s.split()[3].endswith(f":{client_port}") for s in seen["sockets"]), seen["sockets"]
        assert all(_local_address(s) in ("127.0.0.1", "[::ffff:127.0.0.1]") for s in seen["sockets"]), seen["sockets"]
        assert not ray.is_initialized()
        assert ray_cluster.nodes[0].poll() is None, "the cluster must keep running"

    @pytest.mark.ray_client
    def test_another_cluster_is_refused_while_on_ray_client(self, ray_cluster: RayCluster) -> None:
        """Connected through Ray Client, a runner for a direct address refuses to start, naming the client address."""
        import ray

        from taskyard_ray.connection import attach

        assert ray_cluster.client_address is not None
        attach(ray_cluster.client_address, {})  # as a user's own ray.init("ray://...") would
        try:
            with pytest.raises(ValueError, match=f"connected to {ray_cluster.client_address}"):
                RayTaskRunner(address=ray_cluster.address).start()
            with RayTaskRunner(address=ray_cluster.client_address) as same:  # the same connection: shared
                assert same.connection is not None and not same.connection.owned
            left = [t.name for t in threading.enumerate() if t.name.startswith("taskyard-ray")]
            assert not left, f"threads of the runner outlived it (the user shuts Ray down next): {left}"
        finally:
            ray.shutdown()

    def test_initialised_ray_is_used_and_left_alone(self, ray_address: str) -> None:
        """If Ray is already initialised in the process, the runner uses it and leaves it running."""
        import ray

        from taskyard_ray.connection import attach

        attach(ray_address, {})  # as a user's own ray.init would
        try:

            @flow(task_runner=RayTaskRunner())
            def f() -> int:
                return double.submit(4).result()

            assert f() == 8
            assert ray.is_initialized()
            with pytest.raises(ValueError, match="already initialised"):
                RayTaskRunner(address=f"127.0.0.1:{free_port()}").start()
        finally:
            ray.shutdown()

    def test_between_flow_runs_on_a_kept_ray_no_thread_of_the_runner_is_in_a_ray_call(
        self, ray_address: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """On a Ray the user initialised, the log stream's thread stops with each flow run and starts with the next.

        Ray tears its core worker down under any thread still in a Ray call
        when the user's own ``ray.shutdown()`` comes: the stream's thread,
        left polling between flow runs, ended such a process with a
        segmentation fault (seen in this suite, right after the test above).
        """
        import ray

        from taskyard_ray.connection import attach

        def pumps() -> list[str]:
            return [t.name for t in threading.enumerate() if t.name == "taskyard-ray-logs"]

        @flow(task_runner=RayTaskRunner())
        def f(words: str) -> None:
            speaks.submit(words).wait()

        attach(ray_address, {})  # as a user's own ray.init would
        try:
            with caplog.at_level("INFO"):
                f("from the first flow run")
                assert pumps() == [], "the log stream's thread outlived the flow run"
                f("from the second flow run")  # the stream starts again: its records still arrive
                assert pumps() == []
        finally:
            ray.shutdown()
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("from the first flow run") == 1
        assert messages.count("from the second flow run") == 1

    def test_a_runner_whose_start_fails_leaves_no_thread_behind(
        self, ray_address: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A start that fails after the runner joined the log stream lets go of it: no thread of ours is left in Ray."""
        from taskyard_ray import runner as runner_module

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("the head watch could not start")

        monkeypatch.setattr(runner_module.RayTaskRunner, "_watch_head", refuse)
        with pytest.raises(RuntimeError, match="head watch"):
            RayTaskRunner(address=ray_address).start()
        left = [t.name for t in threading.enumerate() if t.name.startswith("taskyard-ray")]
        assert left == [], f"threads left by a failed start: {left}"

    def test_subflow_shares_the_cluster(self, ray_address: str) -> None:
        """A subflow on Ray inside a flow on Ray uses the same Ray, and leaves it up for the parent."""

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def child(x: int) -> int:
            return double.submit(x).result()

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def parent() -> list[int]:
            first = child(1)
            return [first, double.submit(first).result()]  # Ray still up after the subflow

        assert parent() == [2, 4]


# -- data stays on the cluster ---------------------------------------------------------------


@pytest.mark.usefixtures("connected")
class TestData:
    def test_a_chain_of_1000_moves_no_data_through_the_flow_process(self, ray_address: str) -> None:
        """1,000 dependent runs passing 200 kB values: none of the values is unpickled in the flow process."""
        Blob.unpickled = 0

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> tuple[int, int]:
            value = make_blob.submit(200_000)
            for _ in range(1000):
                value = grow.submit(value)
            size = blob_size.submit(value).result()
            return size, Blob.unpickled

        assert f() == (201_000, 0)

    def test_large_results_left_unread_are_released(self, ray_address: str) -> None:
        """A large result never read in its flow run stays in Ray; reading it later says so."""
        kept: list[Any] = []

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> int:
            big = make_blob.submit(500_000)
            kept.append(big)
            return blob_size.submit(big).result()

        assert f() == 500_000
        assert kept[0].state.is_completed()
        with pytest.raises(MissingResultError, match="stayed in Ray"):
            kept[0].result()

    def test_a_shared_argument_is_put_once_per_runner(self, ray_address: str) -> None:
        """A large constant in two maps of one runner is put in Ray once and reused."""
        from taskyard.testing.failures import Payload, payload_size

        payload = Payload(1_000_000)
        with RayTaskRunner(address=ray_address) as runner:
            Payload.pickled = 0
            first = runner.map([_call(payload_size, payload=payload, i=i) for i in range(20)])
            second = runner.map([_call(payload_size, payload=payload, i=i) for i in range(5)])
            assert [f.result(timeout=120) for f in first + second] == [1_000_000 + i for i in [*range(20), *range(5)]]
        assert Payload.pickled == 1


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("connected")
class TestFailures:
    def test_a_killed_worker_crashes_its_run_and_siblings_complete(self, ray_address: str) -> None:
        """A task that kills its Ray worker ends Crashed; the other runs of the map complete."""

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> list[str]:
            futures = dies_or_doubles.map(range(6))
            futures.wait()
            return [fut.state.type.value for fut in futures]

        states = f()
        assert states == ["COMPLETED"] * 3 + ["CRASHED"] + ["COMPLETED"] * 2

    def test_shutdown_with_cancel_pending_stops_running_ray_tasks(self, ray_address: str, tmp_path: Path) -> None:
        """shutdown(cancel_pending=True) cancels the runs on Ray (force): they end Cancelled and never finish."""
        paths = [str(tmp_path / f"run{i}") for i in range(4)]
        runner = RayTaskRunner(address=ray_address).start()
        futures = [runner.submit(_call(sleeps, seconds=20, path=p)) for p in paths]
        deadline = time.monotonic() + 120
        while not any(Path(p + ".started").exists() for p in paths) and time.monotonic() < deadline:
            time.sleep(0.1)
        begun = time.monotonic()
        runner.shutdown(wait=False, cancel_pending=True)
        assert time.monotonic() - begun < 15
        assert all(f.state.is_cancelled() for f in futures)
        time.sleep(2)
        assert not any(Path(p).exists() for p in paths)

    def test_ctrl_c_in_the_flow_cancels_ray_tasks(self, ray_address: str, tmp_path: Path) -> None:
        """KeyboardInterrupt in the flow body ends the flow within seconds and stops its Ray tasks."""
        path = str(tmp_path / "run")

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> None:
            sleeps.submit(20, path)
            deadline = time.monotonic() + 120
            while not Path(path + ".started").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            raise KeyboardInterrupt

        begun = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            f()
        assert time.monotonic() - begun < 150
        time.sleep(2)
        assert not Path(path).exists()

    def test_a_timeout_interrupts_the_code_on_the_worker(self, ray_address: str, tmp_path: Path) -> None:
        """timeout_seconds ends the run TimedOut on time, and the code on the Ray worker is stopped."""
        path = str(tmp_path / "run")

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> str:
            future = overruns.submit(path)
            future.wait()
            return future.state.name

        assert f() == "TimedOut"
        assert Path(path + ".thread").read_text() == "main"  # Ray runs tasks on the worker's main thread
        time.sleep(9)
        assert not Path(path).exists(), "the worker's code must be interrupted at the deadline"

    def test_a_lost_node_crashes_its_run_in_bounded_time(self, ray_cluster: RayCluster, tmp_path: Path) -> None:
        """A run on a node that dies ends Crashed within two minutes; the flow finishes."""
        node = ray_cluster.add_node("--num-cpus=1", '--resources={"doomed": 1}', name="doomed")
        try:
            ray_cluster.wait_for_nodes(3)
            path = str(tmp_path / "run")
            runner = RayTaskRunner(address=ray_cluster.address).start()
            with ray_options(resources={"doomed": 1}):
                future = runner.submit(_call(sleeps, seconds=600, path=path))
            deadline = time.monotonic() + 120
            while not Path(path + ".started").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert Path(path + ".started").exists(), "the run never started on the doomed node"
            killed = time.monotonic()
            stop_tree([node.pid], timeout=1)
            future.wait(timeout=120)
            assert future.done(), "a run on a lost node must end within a bounded time"
            assert future.state.is_crashed(), future.state
            print(f"lost node noticed after {time.monotonic() - killed:.1f} s")
            runner.shutdown()
        finally:
            stop_tree([node.pid], timeout=1)
            ray_cluster.nodes.remove(node)


    def test_a_cluster_that_goes_away_fails_outstanding_runs(self, tmp_path: Path) -> None:
        """When the whole cluster dies, an outstanding run ends Crashed within two minutes and the flow ends."""
        temp = Path(tempfile.mkdtemp(prefix="tyr-", dir="/tmp"))
        port = free_port()
        doomed = RayCluster(f"127.0.0.1:{port}", temp, temp)
        try:
            doomed.start_head(port)
            doomed.wait_for_nodes(1)
            script = Path(__file__).with_name("gone_flow.py")
            with open(tmp_path / "flow.log", "wb") as out:
                proc = subprocess.Popen([sys.executable, str(script), doomed.address], stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 120
                while "SUBMITTED" not in (tmp_path / "flow.log").read_text() and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(2)
                doomed.stop()
                proc.wait(timeout=120)
            finally:
                stop_tree([proc.pid], timeout=5)
            log = (tmp_path / "flow.log").read_text()
            assert "RUN CRASHED" in log and "FLOW ENDED" in log, log[-3000:]
        finally:
            doomed.stop()
            import shutil

            shutil.rmtree(temp, ignore_errors=True)


# -- resources ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("connected")
class TestResources:
    def test_a_gpu_request_reaches_the_ray_scheduler(self, ray_address: str) -> None:
        """@task(resources={"gpu": 1, "memory": ...}) runs on the node declaring a GPU, holding both."""
        wants_gpu = assigned.with_options(resources={"gpu": 1, "memory": "64 MiB"})

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> dict[str, Any]:
            return wants_gpu.submit().result()

        got = f()["resources"]
        assert got.get("GPU") == 1.0 and got.get("memory") == 64 * 2**20, got

    def test_a_custom_resource_request_reaches_the_ray_scheduler(self, ray_address: str) -> None:
        """A custom resource in resources= (and cpu) is asked of Ray under its own name."""
        wants_special = assigned.with_options(resources={"special": 1, "cpu": 0.5})

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> dict[str, Any]:
            return wants_special.submit().result()

        got = f()["resources"]
        assert got.get("special") == 1.0 and got.get("CPU") == 0.5, got

    def test_ray_options_add_to_the_request(self, ray_address: str) -> None:
        """ray_options(num_gpus=..., resources=...) reach Ray too, over the task's own request."""

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> dict[str, Any]:
            with ray_options(num_gpus=1, resources={"special": 2}):
                return assigned.submit().result()

        got = f()["resources"]
        assert got.get("GPU") == 1.0 and got.get("special") == 2.0, got

    def test_a_request_no_node_can_meet_fails_at_once(self, ray_address: str) -> None:
        """Asking for more GPUs than any node has ends the run Failed at once, naming the resource."""
        greedy = double.with_options(resources={"gpu": 4})

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> Any:
            future = greedy.submit(1)
            future.wait(timeout=30)
            return future.done(), future.state.is_failed(), future.result(raise_on_failure=False)

        done, failed, error = f()
        assert done and failed
        assert isinstance(error, UnsatisfiableResourcesError) and "gpu=4" in str(error), error

    def test_runtime_env_reaches_the_worker(self, ray_address: str) -> None:
        """ray_options(runtime_env=...) applies to the runs submitted in the block."""

        @flow(task_runner=RayTaskRunner(address=ray_address))
        def f() -> list[Any]:
            with ray_options(runtime_env={"env_vars": {"TASKYARD_RAY_TEST": "on"}}, scheduling_strategy="SPREAD"):
                inside = env_var.submit("TASKYARD_RAY_TEST")
            outside = env_var.submit("TASKYARD_RAY_TEST")
            return [inside.result(), outside.result()]

        assert f() == ["on", None]


# -- logs ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("connected")
class TestLogs:
    def test_worker_logs_reach_the_flow_once_with_run_names(
        self, ray_address: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Records of the run logger and log_prints in Ray workers reach the flow's loggers once, named."""

        @flow(task_runner=RayTaskRunner(address=ray_address), flow_run_name="ray-logs")
        def f() -> None:
            speaks.submit("said on a ray worker").wait()
            prints.submit("printed on a ray worker").wait()

        with caplog.at_level("INFO"):
            f()
        said = [r for r in caplog.records if "said on a ray worker" in r.getMessage()]
        printed = [r for r in caplog.records if "printed on a ray worker" in r.getMessage()]
        assert len(said) == 1 and len(printed) == 1
        assert getattr(said[0], "flow_run_name", None) == "ray-logs"
        assert getattr(said[0], "task_run_name", "").startswith("speaks-")

    def test_worker_logs_reach_the_flow_while_the_run_is_running(self, ray_address: str, tmp_path: Path) -> None:
        """A run's records reach the flow process while it runs: the run waits until the flow has seen both."""
        release = tmp_path / "seen"
        seen: list[logging.LogRecord] = []

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)
                messages = [r.getMessage() for r in seen]
                if "live from ray" in messages and "live from ray (printed)" in messages:
                    release.write_text("seen")

        @flow(task_runner=RayTaskRunner(address=ray_address), flow_run_name="ray-live-logs")
        def f() -> str:
            return speaks_then_waits.submit("live from ray", str(release)).result()

        watch = Watch(logging.INFO)
        target = logging.getLogger("taskyard")
        saved = target.level
        target.addHandler(watch)
        target.setLevel(logging.INFO)
        try:
            outcome = f()
        finally:
            target.removeHandler(watch)
            target.setLevel(saved)
        assert outcome == "released"
        ours = [r for r in seen if r.getMessage().startswith("live from ray")]
        assert sorted(r.getMessage() for r in ours) == ["live from ray", "live from ray (printed)"], "each record once"
        assert all(getattr(r, "flow_run_name", None) == "ray-live-logs" for r in ours)
        assert all(str(getattr(r, "task_run_name", "")).startswith("speaks_then_waits-") for r in ours)
