"""The contract for lost workers, shipping, cancellation and shutdown.

Part of :class:`~taskyard.testing.TaskRunnerContract`. These are the
behaviours a runner written in an afternoon gets wrong while passing
everything else: a backend's own retries running a task more often than its
``retries`` say, an upstream with no native future yet, a result that cannot
travel back, a shared value shipped once per run, a ``shutdown`` that does
not wait. Each assertion message says what the runner must do.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, task, unmapped
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.exceptions import UpstreamTaskError
from taskyard.runners.base import TaskRunner
from taskyard.testing.hermetic import HermeticHome

__all__ = ("TaskRunnerFailureContract",)


class ContractFailure(Exception):
    """Raised by the tasks here on purpose (picklable, distinct)."""


@task(retries=1)
def ends_its_process(path: str) -> None:
    with open(path, "a") as fh:
        fh.write("attempt\n")
    os._exit(13)


@task
def ends_its_process_once(path: str) -> None:
    with open(path, "a") as fh:
        fh.write("attempt\n")
    os._exit(13)


@task
def plus_one(x: Any) -> Any:
    return x + 1


@task(max_concurrency=1)
def gated(x: int, seconds: float = 0.2) -> int:
    time.sleep(seconds)
    return x


@task
def combine(a: Any, b: Any) -> Any:
    return a * 10 + b


@task
def returns_a_lock() -> Any:
    return threading.Lock()


@task
def runs_long(started: str, finished: str, seconds: float = 30.0) -> None:
    Path(started).write_text("started")
    time.sleep(seconds)
    Path(finished).write_text("finished")


@task
def writes_after(path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("done")
    return path


class Payload:
    """A large value that counts how often it is pickled in the process that pickles it."""

    pickled = 0

    def __init__(self, size: int) -> None:
        self.data = b"p" * size

    def __reduce__(self) -> tuple[Any, ...]:
        Payload.pickled += 1
        return _rebuild_payload, (self.data,)


def _rebuild_payload(data: bytes) -> Payload:
    payload = Payload.__new__(Payload)
    payload.data = data
    return payload


@task
def payload_size(payload: Payload, i: int) -> int:
    return len(payload.data) + i


def _call(t: Any, **params: Any) -> TaskCall[Any]:
    return TaskCall(t, params, TaskRunInfo(os.urandom(16).hex(), f"{t.name}-call", t.name))


def _attempts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


class TaskRunnerFailureContract(HermeticHome):
    """Lost workers, runs with no native future yet, shipping, cancellation, shutdown."""

    @pytest.fixture
    def runner(self) -> TaskRunner[Any]:
        raise NotImplementedError("provide a `runner` fixture returning an unstarted runner")

    def test_a_lost_worker_counts_as_an_attempt(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A task that ends its worker process runs exactly 1 + retries times, then ends Crashed."""
        if not runner.requires_pickling:
            pytest.skip("the runner runs tasks in the flow's process: a task ending it ends the flow")
        marker = tmp_path / "attempts"

        stash: list[Any] = []

        @flow(task_runner=runner)
        def f() -> None:
            stash.append(ends_its_process.submit(str(marker)))
            stash[0].wait()

        f(return_state=True)
        state = stash[0].state
        assert state.is_crashed(), f"a run whose worker died must end Crashed, not {state.type.value} ({state.message})"
        assert _attempts(marker) == 2, (
            f"a lost worker is one attempt: with retries=1 the task must run exactly 2 times, it ran {_attempts(marker)} "
            "(turn the backend's own retries off; place a lost run again only while the task's retries allow)"
        )

    def test_downstream_of_a_lost_run_is_not_ready(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A run whose upstream's worker died never starts: it ends NotReady, naming the upstream."""
        if not runner.requires_pickling:
            pytest.skip("the runner runs tasks in the flow's process: a task ending it ends the flow")

        stash: list[Any] = []

        @flow(task_runner=runner)
        def f() -> None:
            lost = ends_its_process_once.submit(str(tmp_path / "attempts"))
            stash.extend([lost, plus_one.submit(lost)])
            stash[1].wait()

        f(return_state=True)
        upstream_name, state = stash[0].task_run_name, stash[1].state
        error = state.result(raise_on_failure=False)
        assert state.name == "NotReady", f"the downstream of a Crashed run must end NotReady, not {state.name}"
        assert isinstance(error, UpstreamTaskError) and upstream_name in str(error), (
            f"the NotReady run's error must name the lost upstream {upstream_name!r}: {error!r}"
        )

    def test_downstream_of_a_run_held_by_a_limit(self, runner: TaskRunner[Any]) -> None:
        """A run depending on runs a concurrency limit holds back waits for them and gets their results."""

        @flow(task_runner=runner)
        def f() -> int:
            first = gated.submit(1)
            second = gated.submit(2)  # held back by max_concurrency=1: no backend future yet
            return int(combine.submit(first, second).result())

        assert f() == 12, (
            "an upstream with no backend future yet (held back by a limit) must be waited for "
            "and its result passed to the downstream run"
        )

    def test_an_unpicklable_result_fails_the_run(self, runner: TaskRunner[Any]) -> None:
        """A result that cannot travel back to the flow process ends the run Failed, not Crashed."""
        if not runner.requires_pickling:
            pytest.skip("the runner does not pickle results: any result works")

        stash: list[Any] = []

        @flow(task_runner=runner)
        def f() -> int:
            bad = returns_a_lock.submit()
            stash.append(bad)
            good = plus_one.submit(1)
            bad.wait()
            return int(good.result())

        good = f(return_state=True).result(raise_on_failure=False)
        state = stash[0].state
        assert state.is_failed() and not state.is_crashed(), (
            f"an unpicklable result is the task's fault: the run must end Failed (as on every runner), not {state.name}"
        )
        assert good == 2, "the other runs must complete"

    def test_cancel_running_interrupts_a_running_run(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """With supports_cancel_running, a run already executing is stopped when the flow fails."""
        if not runner.supports_cancel_running:
            pytest.skip("the runner does not claim supports_cancel_running")
        started, finished = tmp_path / "started", tmp_path / "finished"
        stash: list[Any] = []

        @flow(task_runner=runner)
        def f() -> None:
            stash.append(runs_long.submit(str(started), str(finished), 8.0))
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise ContractFailure("stop while the run is running")

        begun = time.monotonic()
        assert f(return_state=True).is_failed()
        elapsed = time.monotonic() - begun
        assert started.exists(), "the run never started; the test could not check cancellation"
        assert stash[0].state.is_cancelled(), f"the running run must end Cancelled, not {stash[0].state.name}"
        assert elapsed < 7.0, f"the flow must end without waiting for the running run (it took {elapsed:.1f} s)"
        time.sleep(8.5 - min(elapsed, 8.5))
        assert not finished.exists(), "a runner that claims supports_cancel_running must stop the running code"

    def test_a_large_shared_argument_is_shipped_once(self, runner: TaskRunner[Any]) -> None:
        """A 2 MB value shared by 10 mapped runs is pickled at most once in the flow process."""
        payload = Payload(2_000_000)
        Payload.pickled = 0

        @flow(task_runner=runner)
        def f() -> list[int]:
            return payload_size.map(unmapped(payload), range(10)).result()

        assert f() == [2_000_000 + i for i in range(10)]
        assert Payload.pickled <= 1, (
            f"a large value every run of a map shares must be shipped once and referenced (scatter, put, a file), "
            f"not pickled into each call: it was pickled {Payload.pickled} times for 10 runs"
        )

    def test_shutdown_with_wait_waits(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """shutdown(wait=True) returns only once every accepted run has finished."""
        paths = [tmp_path / f"out{i}" for i in range(3)]
        runner.start()
        futures = [runner.submit(_call(writes_after, path=str(p), seconds=0.5)) for p in paths]
        runner.shutdown(wait=True)
        assert all(f.done() for f in futures), "shutdown(wait=True) must not return before every run is done"
        assert all(p.exists() for p in paths), "shutdown(wait=True) must let every accepted run finish"
        assert [f.state.is_completed() for f in futures] == [True] * 3, "runs finished at shutdown must complete"
