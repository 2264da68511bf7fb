"""DaskTaskRunner behaviour beyond the shared contract: failures, data placement, options, logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from dask.sizeof import sizeof

from taskyard import flow, get_run_logger, tags, task
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.exceptions import MissingResultError, UnpicklableArgumentError
from taskyard.futures import TaskFuture
from taskyard.inputs import Upstream
from taskyard.states import Completed, StateType
from taskyard_dask import DaskTaskRunner, dask_options

# -- tasks (module level: workers import this module by name) ------------------------------


@task
def sums_on_the_cluster(values: list[int]) -> int:
    from taskyard_dask import get_dask_client

    with get_dask_client() as client:
        return int(sum(client.gather(client.map(lambda v: v * 2, values))))

UNPICKLED: list[int] = []


def _rebuild(data: bytes) -> Payload:
    UNPICKLED.append(os.getpid())
    return Payload(data)


class Payload:
    """A large value that records each unpickling in the process doing it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return _rebuild, (self.data,)


@sizeof.register(Payload)
def _sizeof_payload(payload: Payload) -> int:
    return len(payload.data)


@task
def make_payload(megabytes: int) -> Payload:
    return Payload(b"x" * (megabytes * 1_000_000))


@task
def grow(payload: Payload) -> Payload:
    return Payload(payload.data + b"y")


@task
def measure(payload: Payload) -> int:
    return len(payload.data)


@task
def hundred_kb(i: int) -> bytes:
    return bytes([i % 256]) * 100_000


@task
def die_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)
    return "survived"


@task
def die() -> None:
    os._exit(1)


@task
def make_lock() -> Any:
    return threading.Lock()


@task
def use_lock(lock: Any, n: int = 0) -> int:
    return n


@task
def size_of(blob: bytes, i: int) -> int:
    return len(blob) + i


@task
def where() -> str:
    from distributed import get_worker

    return str(get_worker().address)


@task
def chatty(word: str) -> int:
    get_run_logger().info("worker says %s from pid %d", word, os.getpid())
    logging.getLogger("taskyard.user").warning("plain taskyard logger says %s", word)
    return os.getpid()


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def add(x: int, y: int) -> int:
    return x + y


def _call(t: Any, upstreams: list[Upstream] | None = None, **params: Any) -> TaskCall[Any]:
    run_id = os.urandom(16).hex()
    return TaskCall(t, params, TaskRunInfo(run_id, f"{t.name}-{run_id[:8]}", t.name), None, upstreams or [])


# -- failures -------------------------------------------------------------------------------


class TestFailures:
    def test_worker_death_is_crashed_and_the_flow_finishes(self, dask_address: str) -> None:
        """A task that kills its worker process ends Crashed; the other runs still complete."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[Any, int]:
            dead = die.submit()
            alive = add.submit(1, 2)
            dead.wait(60)
            return (dead.state.type, dead.state.message), alive.result(timeout=60)

        (kind, message), value = f()
        assert kind is StateType.CRASHED and "died" in (message or "")
        assert value == 3

    def test_downstream_of_a_lost_run_is_not_ready(self, dask_address: str) -> None:
        """A run whose upstream's worker died ends NotReady naming it, and the flow finishes."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[str, str, str]:
            dead = die.submit()
            after = add.submit(dead, 1)
            after.wait(60)
            return dead.task_run_name, after.state.name, after.state.message or ""

        upstream, name, message = f()
        assert name == "NotReady" and upstream in message

    def test_states_as_arguments(self, dask_address: str) -> None:
        """A State given as an argument passes its result, or makes the run NotReady when it failed."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[int, str]:
            ok = add.submit(add(1, 2, return_state=True), 1)
            failed = add.submit([add(1, "x", return_state=True)], 1)
            failed.wait(60)
            return ok.result(timeout=60), failed.state.name

        assert f() == (4, "NotReady")

    def test_an_unpicklable_result_fails_the_run(self, dask_address: str) -> None:
        """A result that cannot leave its worker ends Failed (as on the process runner), not Crashed."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> str:
            future = make_lock.submit()
            future.wait(60)
            return future.state.name

        assert f() == "Failed"

    def test_worker_death_is_retried_per_task_retries(self, dask_address: str, tmp_path: Path) -> None:
        """With retries, a run whose worker died runs again and completes on its second attempt."""
        marker = str(tmp_path / "died-once")

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> Any:
            fut = die_once.with_options(retries=1).submit(marker)
            fut.wait(60)
            return fut.state.type, fut.state.run_count, fut.result()

        assert f() == (StateType.COMPLETED, 2, "survived")

    def test_worker_death_on_local_cluster_is_crashed(self) -> None:
        """The runner's own LocalCluster reports a dead worker at once (no Dask-side retries)."""
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1})

        @flow(task_runner=runner)
        def f() -> Any:
            fut = die.submit()
            fut.wait(60)
            return fut.state.type

        assert f() is StateType.CRASHED

    def test_unpicklable_argument_fails_naming_it(self, dask_address: str) -> None:
        """A threading.Lock argument ends Failed with UnpicklableArgumentError naming the argument."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> list[Any]:
            one = use_lock.submit(threading.Lock())
            many = use_lock.map(threading.Lock(), [1, 2])
            return [fut.result(raise_on_failure=False) for fut in [one, *many]]

        errors = f()
        assert all(isinstance(e, UnpicklableArgumentError) for e in errors)
        assert all("'lock'" in str(e) for e in errors)

    def test_unpicklable_call_in_a_batch_fails_alone(self, dask_address: str) -> None:
        """In runner.map, only the call that will not pickle fails; the others run."""
        with DaskTaskRunner(address=dask_address) as runner:
            calls = [_call(use_lock, lock=None, n=1), _call(use_lock, lock=threading.Lock(), n=2), _call(use_lock, lock=None, n=3)]
            futures = runner.map(calls)
            results = [f.result(timeout=60, raise_on_failure=False) for f in futures]
        assert results[0] == 1 and results[2] == 3
        assert isinstance(results[1], UnpicklableArgumentError)

    def test_cancel_pending_cancels_dask_futures(self, dask_address: str) -> None:
        """shutdown(cancel_pending=True) ends outstanding runs Cancelled and cancels them on Dask."""
        runner = DaskTaskRunner(address=dask_address).start()
        futures = runner.map([_call(nap, seconds=0.5) for _ in range(20)])
        # Calls still waiting for a batch have no Dask future yet: they never reach Dask.
        keys = list({f.native.key for f in futures if f.native is not None})
        assert keys, "the first batches go to Dask at once"
        runner.shutdown(wait=False, cancel_pending=True)
        assert all(f.state.is_cancelled() for f in futures)
        from distributed import Client

        with Client(dask_address, set_as_default=False) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                known = client.run_on_scheduler(lambda dask_scheduler, keys=keys: [k for k in keys if k in dask_scheduler.tasks])
                if not known:
                    break
                time.sleep(0.1)
            assert not known

    def test_lost_scheduler_crashes_outstanding_runs(self, tmp_path: Path) -> None:
        """When the scheduler dies, outstanding runs end Crashed within seconds, not hang."""
        from dask_processes import free_port as _free_port
        from dask_processes import stop_processes as _stop
        from dask_processes import wait_for_workers as _wait_for_workers

        address = f"tcp://127.0.0.1:{_free_port()}"
        port = address.rsplit(":", 1)[1]
        with open(tmp_path / "log", "wb") as out:
            scheduler = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                stdout=out, stderr=subprocess.STDOUT,
            )
            worker = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--no-nanny"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_workers(address, 1, scheduler, worker)
            runner = DaskTaskRunner(address=address, client_kwargs={"timeout": 3}).start()
            future = runner.submit(_call(nap, seconds=30))
            time.sleep(1)
            started = time.monotonic()
            _stop([psutil.Process(scheduler.pid)])
            future.wait(20)
            assert future.state.is_crashed()
            assert time.monotonic() - started < 20
            runner.shutdown()
        finally:
            # The worker has no scheduler to say goodbye to: do not wait long for it.
            _stop([psutil.Process(p.pid) for p in (worker, scheduler) if p.poll() is None], timeout=2)
            for popen in (worker, scheduler):
                popen.wait(timeout=10)


# -- data placement -----------------------------------------------------------------------


class TestData:
    def test_chain_data_stays_on_the_workers(self, dask_address: str) -> None:
        """A chain A→B→C of 10 MB values never unpickles the values in the flow process."""
        UNPICKLED.clear()
        kept: list[Any] = []

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[int, int, Any]:
            a = make_payload.submit(10)
            b = grow.submit(a)
            c = measure.submit(b)
            length = c.result()
            during_chain = len(UNPICKLED)
            b_length = len(b.result().data)  # reading a value does bring it here
            kept.append(a)
            return length, during_chain, (b_length, len(UNPICKLED))

        length, during_chain, (b_length, after_read) = f()
        (a,) = kept
        assert length == 10_000_001 and during_chain == 0
        assert b_length == 10_000_001 and after_read == 1
        # A's value was never read in the flow run: it stayed on the cluster.
        assert a.state.is_completed()
        with pytest.raises(MissingResultError, match="stayed on the Dask cluster"):
            a.result()

    def test_unread_small_results_come_back_within_a_budget(self, dask_address: str) -> None:
        """40 unread results of 100 kB: at most 1 MB per worker comes back when the flow run ends, the rest stays."""
        from taskyard_dask.worker import HEADER_BUDGET_BYTES

        kept: list[Any] = []

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> None:
            kept.extend(hundred_kb.map(range(40)))

        f()
        back = released = 0
        for future in kept:
            assert future.state.is_completed()
            try:
                assert len(future.result()) == 100_000
                back += 1
            except MissingResultError as exc:
                assert "stayed on the Dask cluster" in str(exc)
                released += 1
        workers = 2  # the session cluster's
        assert back + released == 40 and released > 0
        assert back * 100_000 <= workers * HEADER_BUDGET_BYTES

    def test_large_shared_argument_is_scattered_once(self, dask_address: str) -> None:
        """A 2 MB constant given to 10 mapped runs is scattered once; calls carry a placeholder."""
        blob = b"z" * 2_000_000
        with DaskTaskRunner(address=dask_address) as runner:
            scatters = []
            original = runner.client.scatter

            def counting(*args: Any, **kwargs: Any) -> Any:
                scatters.append(args)
                return original(*args, **kwargs)

            runner.client.scatter = counting
            futures = runner.map([_call(size_of, blob=blob, i=i) for i in range(10)])
            assert [f.result(timeout=60) for f in futures] == [2_000_000 + i for i in range(10)]
            again = runner.map([_call(size_of, blob=blob, i=i) for i in range(3)])
            assert [f.result(timeout=60) for f in again] == [2_000_000 + i for i in range(3)]
            large_keys = [k for k, n in runner.client.nbytes(summary=False).items() if n >= 1_000_000]
        assert len(scatters) == 1  # and reused by the second map
        assert len(large_keys) == 1

    def test_large_shared_argument_through_a_flow(self, dask_address: str) -> None:
        """Task.map with a large constant gives every run the value."""
        blob = b"q" * 500_000

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> list[int]:
            return size_of.map(blob, range(5)).result()

        assert f() == [500_000 + i for i in range(5)]

    def test_upstream_from_another_runner_is_waited_for(self, dask_address: str) -> None:
        """An upstream future with no Dask future is waited for and its state passed along."""
        foreign: TaskFuture[int] = TaskFuture("f" * 32, "foreign")
        with DaskTaskRunner(address=dask_address) as runner:
            future = runner.submit(_call(add, upstreams=[Upstream(foreign, False)], x=foreign, y=1))
            assert not future.done()
            threading.Timer(0.3, foreign._set_state, [Completed(41)]).start()
            assert future.result(timeout=60) == 42


# -- modes, options, logs -------------------------------------------------------------------


class TestClusters:
    def test_address_mode_leaves_the_cluster_running(self, dask_processes: Any) -> None:
        """After a flow run on an address, the scheduler and its workers still run."""

        @flow(task_runner=DaskTaskRunner(address=dask_processes.address))
        def f() -> int:
            return add.submit(1, 1).result()

        assert f() == 2
        assert dask_processes.scheduler.poll() is None and dask_processes.workers.poll() is None
        from distributed import Client

        with Client(dask_processes.address, set_as_default=False) as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2

    def test_local_cluster_leaves_no_processes(self) -> None:
        """A temporary LocalCluster and all its processes are gone after the flow run."""
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # the interpreter's own helper, shared by every pool
        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
        def f() -> list[int]:
            return add.map(range(4), 1).result()

        assert f() == [1, 2, 3, 4]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = {p for p in me.children(recursive=True) if p.pid not in before and _alive(p)}
            if not left:
                break
            time.sleep(0.1)
        assert not left, [(p.pid, _cmdline(p)) for p in left]

    def test_adaptive_local_cluster(self) -> None:
        """adapt_kwargs makes the temporary cluster adaptive; runs complete."""

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 0, "threads_per_worker": 1}, adapt_kwargs={"minimum": 1, "maximum": 2}))
        def f() -> list[int]:
            return add.map(range(10), 1).result()

        assert f() == list(range(1, 11))

    def test_cluster_class_as_import_string(self) -> None:
        """cluster_class accepts a 'module.Class' string."""
        runner = DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={"n_workers": 1, "processes": False})
        with runner:
            assert runner.cluster is not None
            assert runner.submit(_call(add, x=1, y=2)).result(timeout=60) == 3
        assert runner.cluster.status.name == "closed"

    def test_address_and_cluster_options_conflict(self) -> None:
        """address with cluster options is refused at once."""
        with pytest.raises(ValueError, match="either address"):
            DaskTaskRunner(address="tcp://127.0.0.1:1", cluster_kwargs={"n_workers": 1})

    def test_dashboard_link_is_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """Starting a LocalCluster logs its dashboard link at DEBUG (the flow run's first line shows it)."""
        caplog.set_level(logging.DEBUG, logger="taskyard.dask")
        with DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}) as runner:
            link = runner.dashboard_link
        assert link and link.startswith("http://127.0.0.1:")
        assert any(link in r.getMessage() for r in caplog.records if r.name == "taskyard.dask")

    def test_client_property(self, dask_address: str) -> None:
        """runner.client is the connected distributed.Client once started."""
        from distributed import Client

        runner = DaskTaskRunner(address=dask_address)
        with runner:
            assert isinstance(runner.client, Client) and runner.client.status == "running"

    def test_get_dask_client_inside_a_task_run(self, dask_address: str) -> None:
        """get_dask_client() in a task on the Dask runner gives a client of that cluster (worker_client)."""

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> int:
            return sums_on_the_cluster.submit([1, 2, 3]).result()

        assert f() == 12

    def test_get_dask_client_in_a_flow_body(self, dask_address: str) -> None:
        """get_dask_client() in the body of a flow on the Dask runner gives that runner's client."""
        from taskyard import get_run_context
        from taskyard_dask import get_dask_client

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[int, bool]:
            with get_dask_client() as client:
                same = client is get_run_context().task_runner.client
                return client.submit(sum, [1, 2, 3]).result(), same

        assert f() == (6, True)

    def test_get_dask_client_without_a_cluster_says_so(self) -> None:
        """get_dask_client() where no Dask cluster is in use raises a clear RuntimeError."""
        from taskyard_dask import get_dask_client

        with pytest.raises(RuntimeError, match="no Dask cluster"), get_dask_client():
            pass

    def test_import_does_not_import_distributed(self) -> None:
        """import taskyard_dask leaves dask and distributed unimported."""
        code = "import sys, taskyard_dask; print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False"


class TestOptions:
    def test_dask_options_reach_the_scheduler(self, dask_address: str) -> None:
        """dask_options(...) and dask-resource tags become Dask restrictions, priority and annotations."""

        def read(dask_scheduler: Any, key: str) -> Any:
            ts = dask_scheduler.tasks[key]
            return ts.priority, ts.annotations, sorted(ts.worker_restrictions or [])

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[Any, Any, str]:
            workers = sorted(_worker_addresses(dask_address))
            with tags("gpu-ish"), dask_options(priority=7, workers=[workers[0]], annotations={"team": "a"}):
                fut = where.submit()
            ran_on = fut.result()
            return fut.native.client.run_on_scheduler(read, key=fut.native.key), workers[0], ran_on

        (priority, annotations, restrictions), wanted, ran_on = f()
        assert ran_on == wanted and restrictions == [wanted]
        assert annotations.get("team") == "a" and annotations.get("taskyard_tags") == ["gpu-ish"]
        assert -7 in tuple(priority)

    def test_resource_tag_needs_a_worker_with_the_resource(self) -> None:
        """A run tagged dask-resource:GPU=1 goes to a worker that has a GPU resource."""

        @task(tags=["dask-resource:GPU=1"])
        def on_gpu() -> str:
            from distributed import get_worker

            return str(get_worker().state.total_resources)

        runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "resources": {"GPU": 1}})

        @flow(task_runner=runner)
        def f() -> str:
            return on_gpu.submit().result(timeout=60)

        assert "GPU" in f()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "?"


def _worker_addresses(address: str) -> list[str]:
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return list(client.scheduler_info(n_workers=-1)["workers"])


class TestLogs:
    def test_worker_logs_reach_the_flow_process(self, dask_address: str, caplog: pytest.LogCaptureFixture) -> None:
        """Records of taskyard loggers on workers are re-emitted in the flow process, with run names."""
        caplog.set_level(logging.INFO)

        @flow(task_runner=DaskTaskRunner(address=dask_address), flow_run_name="logging-flow")
        def f() -> tuple[int, str]:
            fut = chatty.submit("hello")
            pid = fut.result()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("worker says hello" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
            return pid, fut.task_run_name

        pid, run_name = f()
        assert pid != os.getpid()
        said = [r for r in caplog.records if "worker says hello" in r.getMessage()]
        assert len(said) == 1
        record = said[0]
        assert record.name == "taskyard.runs" and record.getMessage() == f"worker says hello from pid {pid}"
        assert getattr(record, "flow_run_name", None) == "logging-flow"
        assert getattr(record, "task_run_name", None) == run_name
        plain = [r for r in caplog.records if "plain taskyard logger says hello" in r.getMessage()]
        assert plain and plain[0].levelno == logging.WARNING and plain[0].name == "taskyard.user"


def test_records_of_any_logger_reach_the_flow_once(caplog: pytest.LogCaptureFixture) -> None:
    """A worker's records from taskyard and from user loggers each reach the flow process exactly once."""

    @task
    def talk(i: int) -> int:
        get_run_logger().info("taskyard record %s", i)
        logging.getLogger("userlib").warning("user record %s", i)
        return i

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}))
    def f() -> list[int]:
        return talk.map(range(3)).result()

    with caplog.at_level(logging.INFO):
        assert f() == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records]
    for i in range(3):
        assert sum(m.endswith(f"taskyard record {i}") for m in messages) == 1
        assert sum(m == f"user record {i}" for m in messages) == 1
