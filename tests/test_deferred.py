"""Deferred task runs (apply_async, delay, map(deferred=True)) and the task worker, in one process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, task
from taskyard.background import TaskWorker
from taskyard.deferred import DeferredFuture
from taskyard.exceptions import UnpicklableArgumentError, UpstreamTaskError
from taskyard.futures import as_completed
from taskyard.store.db import connect
from taskyard.store.taskqueue import LEASE_S, claim, read_rows, recover_lost

CALLS: list[int] = []


@task
def add(x: int, y: int = 0) -> int:
    CALLS.append(x)
    return x + y


@task
def fail(message: str) -> int:
    raise ValueError(message)


@task(retries=2)
def flaky() -> int:
    count = get_run_context().task_run.run_count  # type: ignore[union-attr]
    if count < 2:
        raise RuntimeError(f"attempt {count} fails")
    return count


@task(timeout_seconds=0.2)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(cache_key_fn=lambda context, params: f"square-{params['x']}")
def cached_square(x: int) -> int:
    CALLS.append(x)
    return x * x


HOOKED: list[str] = []


@task(on_completion=[lambda task, task_run, state: HOOKED.append(f"{task_run.name}:{state.name}")])
def hooked(x: int) -> int:
    return x


@task
async def async_double(x: int) -> int:
    return 2 * x


@pytest.fixture
def worker() -> Iterator[TaskWorker]:
    """A worker for the tasks above, serving in a thread of this process."""
    CALLS.clear()
    w = TaskWorker(add, fail, flaky, sleepy, cached_square, hooked, async_double, limit=4)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        yield w
    finally:
        w.stop()
        thread.join(30)
        assert not thread.is_alive()


def _home() -> Path:
    return Path(os.environ["TASKYARD_HOME"])


class TestEnqueue:
    def test_delay_returns_a_pending_future_at_once_without_any_worker(self) -> None:
        """delay() records a Pending run and returns its future; nothing runs it while no worker serves the task."""
        future = add.delay(1, 2)
        assert isinstance(future, DeferredFuture)
        assert future.state.is_pending() and not future.done()
        future.wait(0.2)
        assert not future.done()
        (row,) = read_rows(connect(_home()), [future.task_run_id])
        assert row[2] == "add" and row[3] == "PENDING"

    def test_apply_async_binds_like_a_call_and_names_a_bad_argument(self) -> None:
        """apply_async(args, kwargs) binds against the signature; wrong arguments raise at once."""
        assert add.apply_async((1,), {"y": 2}).task_run_name.startswith("add-")
        with pytest.raises(TypeError):
            add.apply_async((1, 2, 3))
        with pytest.raises(TypeError):
            add.delay(1, z=2)  # type: ignore[call-arg]

    def test_an_argument_that_cannot_be_pickled_is_named(self) -> None:
        """An unpicklable argument fails when enqueued, naming it, and records nothing."""
        with pytest.raises(UnpicklableArgumentError, match="argument 'y'.*cannot be pickled"):
            add.delay(1, threading.Lock())  # type: ignore[arg-type]
        assert connect(_home()).execute("SELECT count(*) FROM deferred_runs").fetchone()[0] == 0

    def test_map_deferred_enqueues_one_run_per_item_outside_a_flow(self) -> None:
        """map(..., deferred=True) needs no flow: one Pending run per item, in map order."""
        futures = add.map([1, 2, 3], 10, deferred=True)
        assert len(futures) == 3 and all(isinstance(f, DeferredFuture) for f in futures)
        rows = connect(_home()).execute("SELECT map_index FROM deferred_runs ORDER BY map_index").fetchall()
        assert [r[0] for r in rows] == [0, 1, 2]

    def test_a_future_rebuilt_from_its_id_or_a_pickle_follows_the_same_run(self, worker: TaskWorker) -> None:
        """A DeferredFuture pickled (or made from the id alone) reads the same run's result."""
        future = add.delay(20, 22)
        again = pickle.loads(pickle.dumps(future))
        assert isinstance(again, DeferredFuture) and again.task_run_id == future.task_run_id
        assert DeferredFuture(future.task_run_id).result(timeout=10) == 42
        assert again.result(timeout=10) == 42


class TestWorker:
    def test_runs_are_run_and_their_results_read_back(self, worker: TaskWorker) -> None:
        """A worker runs each enqueued run once; the futures give the results."""
        futures = add.map(range(50), 1, deferred=True)
        assert futures.result(timeout=30) == [i + 1 for i in range(50)]
        assert sorted(CALLS) == list(range(50))

    def test_small_results_live_in_the_store_and_large_ones_in_files(self, worker: TaskWorker) -> None:
        """A small result is kept in the run's row; one over 64 KiB goes to the result storage; both read back."""
        small = add.delay(1, 1)
        large = add.delay(b"x" * 100_000, b"y")  # type: ignore[arg-type]
        assert small.result(timeout=10) == 2 and small.state.result_location is None
        assert large.result(timeout=10) == b"x" * 100_000 + b"y"
        location = large.state.result_location
        assert location is not None and Path(location).is_file()

    def test_a_failed_run_raises_its_own_exception(self, worker: TaskWorker) -> None:
        """A run that raised ends Failed; result() raises the task's exception, or returns it."""
        future = fail.delay("no good")
        with pytest.raises(ValueError, match="no good"):
            future.result(timeout=10)
        assert future.state.is_failed()
        assert isinstance(future.result(raise_on_failure=False), ValueError)

    def test_retries_and_timeouts_are_the_engines(self, worker: TaskWorker) -> None:
        """The served task's retries and timeout apply: a flaky run completes on its second attempt, a slow one times out."""
        retried = flaky.delay()
        slow = sleepy.delay(5)
        assert retried.result(timeout=20) == 2
        assert retried.state.run_count == 2
        slow.wait(10)
        assert slow.state.name == "TimedOut"

    def test_an_async_task_is_awaited_by_the_worker(self, worker: TaskWorker) -> None:
        """An async task's deferred run is awaited by the engine in the worker."""
        assert async_double.delay(21).result(timeout=10) == 42

    def test_visualize_refuses_deferred_runs(self) -> None:
        """Flow.visualize() cannot draw a deferred run: it says so instead of enqueueing one."""
        from taskyard.visualize import VisualizationError

        @flow
        def enqueuing() -> None:
            add.delay(1)

        with pytest.raises(VisualizationError, match="task worker"):
            enqueuing.visualize()
        assert connect(_home()).execute("SELECT count(*) FROM deferred_runs").fetchone()[0] == 0

    def test_hooks_run_in_the_worker(self, worker: TaskWorker) -> None:
        """The served task's on_completion hook runs, with the deferred run's name and final state."""
        HOOKED.clear()
        future = hooked.delay(3)
        assert future.result(timeout=10) == 3
        expected = [f"{future.task_run_name}:Completed"]
        assert expected == HOOKED

    def test_a_cached_result_is_kept_for_the_producer(self, worker: TaskWorker) -> None:
        """A cache hit runs nothing, and its value is still readable from the store."""
        assert cached_square.delay(7).result(timeout=10) == 49
        assert cached_square.delay(7).result(timeout=10) == 49
        assert CALLS == [7]

    def test_wait_for_holds_a_run_until_its_upstream_finishes(self, worker: TaskWorker) -> None:
        """A run that takes a deferred future (or waits for one) starts after it, with its result."""
        first = sleepy.delay(0.1)
        second = add.apply_async((5,), wait_for=[first])
        third = add.delay(second, 1)
        assert third.result(timeout=10) == 6
        assert first.state.start_time <= second.state.start_time  # type: ignore[operator]

    def test_a_failed_upstream_makes_the_run_not_ready(self, worker: TaskWorker) -> None:
        """A run whose deferred upstream failed never runs: it ends NotReady, naming the upstream."""
        upstream = fail.delay("upstream broke")
        downstream = add.delay(upstream)  # type: ignore[arg-type]
        waiting = add.apply_async((1,), wait_for=[upstream])
        for future in (downstream, waiting):
            future.wait(10)
            assert future.state.name == "NotReady" and upstream.task_run_name in (future.state.message or "")
            with pytest.raises(UpstreamTaskError):
                future.result()
        assert CALLS == []

    def test_done_callbacks_and_as_completed_see_deferred_runs(self, worker: TaskWorker) -> None:
        """add_done_callback and as_completed work on deferred futures as on any future."""
        seen: list[Any] = []
        futures = add.map([1, 2, 3], deferred=True)
        futures[0].add_done_callback(seen.append)
        assert {f.result() for f in as_completed(futures, timeout=10)} == {1, 2, 3}
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [futures[0]]

    def test_deferred_runs_from_inside_a_flow(self, worker: TaskWorker) -> None:
        """Inside a flow, delay() enqueues for the worker; the flow can wait for the result."""

        @flow
        def producer() -> int:
            return add.delay(40, 2).result(timeout=10)

        assert producer() == 42

    def test_a_process_pool_runs_the_claimed_calls(self) -> None:
        """A worker runs its claims on the runner it is given: here a process pool, in other processes."""
        CALLS.clear()
        w = TaskWorker(add, limit=2, task_runner="processes")
        thread = threading.Thread(target=w.run, daemon=True)
        thread.start()
        try:
            assert add.map([1, 2, 3], deferred=True).result(timeout=60) == [1, 2, 3]
        finally:
            w.stop()
            thread.join(60)
        assert CALLS == []  # ran in the pool's processes, not here

    def test_stop_in_a_hurry_hands_unfinished_runs_back(self) -> None:
        """stop(hurry=True) gives the runs a worker still holds back to the queue, Pending, for another worker."""
        w = TaskWorker(sleepy.with_options(timeout_seconds=None), limit=1)
        thread = threading.Thread(target=w.run, daemon=True)
        thread.start()
        future = sleepy.delay(2)
        deadline = time.monotonic() + 10
        while future.state.is_pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.state.is_running()
        w.stop(hurry=True)
        thread.join(10)
        assert not thread.is_alive() and future.state.is_pending()
        assert "handed back" in (future.state.message or "")


class TestClaims:
    def test_a_run_is_claimed_once(self) -> None:
        """Two claims race for the same runs: each run goes to exactly one of them."""
        add.map(range(20), deferred=True)
        a, b = connect(_home()), connect(_home())
        got_a = claim(a, {"add": 0}, 15, "worker-a", os.getpid())
        got_b = claim(b, {"add": 0}, 15, "worker-b", os.getpid())
        assert len(got_a) == 15 and len(got_b) == 5
        assert not {r.id for r in got_a} & {r.id for r in got_b}

    def test_a_run_of_a_dead_worker_is_pending_again_while_retries_allow_then_crashed(self) -> None:
        """A claim by a process that is gone: Pending again while claims ≤ retries, then Crashed."""
        future = add.delay(1)
        conn = connect(_home())
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (run,) = claim(conn, {"add": 1}, 5, "gone", dead.pid)
        assert recover_lost(conn) == 1 and future.state.is_pending()
        assert "attempt 2 of 2" in (future.state.message or "")
        claim(conn, {"add": 1}, 5, "gone", dead.pid)
        assert recover_lost(conn) == 1
        assert future.state.is_crashed() and f"pid {dead.pid}" in (future.state.message or "")

    def test_a_lapsed_lease_counts_as_a_lost_worker(self) -> None:
        """A worker elsewhere that stops renewing loses its runs once the lease lapses."""
        future = add.delay(1)
        conn = connect(_home())
        claim(conn, {"add": 0}, 5, "elsewhere", os.getpid())
        assert recover_lost(conn) == 0  # alive, lease fresh
        conn.execute("UPDATE deferred_runs SET host = 'another-host', lease_until = ?", (time.time() - 1,))
        assert recover_lost(conn) == 1
        assert future.state.is_crashed() and f"{LEASE_S:.0f} s" in (future.state.message or "")


class TestWorkerArguments:
    def test_bad_arguments_fail_at_once(self) -> None:
        """A worker refuses no tasks, non-tasks, two tasks of one name, a bad limit and an unknown runner."""
        with pytest.raises(ValueError, match="at least one task"):
            TaskWorker()
        with pytest.raises(TypeError, match="@task"):
            TaskWorker(print)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="named 'add'"):
            TaskWorker(add, add.with_options(retries=1))
        with pytest.raises(ValueError, match="limit"):
            TaskWorker(add, limit=0)
        with pytest.raises(LookupError, match="nosuch"):
            TaskWorker(add, task_runner="nosuch")
