"""The batching part of the runner contract: a call in a batch is still a run of its own.

Runners that ship calls (processes, Dask, Ray) run the ready calls of a map
in batches. These tests fix ``batch_size`` on the task so that batches
certainly form, and check that every call keeps its own future, State,
retries, timeout, cache, hooks, limits and ``map_index`` — that one call
failing, timing out or killing its worker touches no other call of its
batch — and that cancelling a flow run stops batches not yet started. A
runner that does not batch ignores ``batch_size`` and passes them as well.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, get_run_logger, task, wait
from taskyard.runners.base import TaskRunner
from taskyard.states import StateType
from taskyard.testing.hermetic import HermeticHome

__all__ = ("TaskRunnerBatchingContract",)

_BATCH = 4


class BatchContractError(Exception):
    """Raised on purpose by the calls here (picklable, distinct)."""


def _bump(path: Path) -> int:
    """Count one attempt in ``path`` and return the count."""
    with open(path, "a") as fh:
        fh.write("x")
    return len(path.read_text())


@task(batch_size=_BATCH)
def fails_on(x: int, bad: int) -> int:
    if x == bad:
        raise BatchContractError(f"call {x} fails")
    return x * 10


@task(batch_size=_BATCH, retries=2)
def flaky_on(x: int, bad: int, folder: str) -> int:
    attempts = _bump(Path(folder) / f"attempts-{x}")
    if x == bad and attempts == 1:
        raise BatchContractError("first attempt fails")
    return get_run_context().task_run.run_count  # type: ignore[union-attr]


@task(batch_size=_BATCH, timeout_seconds=1)
def slow_on(x: int, slow: int) -> int:
    if x == slow:
        time.sleep(30)
    return x


@task(batch_size=_BATCH)
def whoami(x: int) -> tuple[int, int, str]:
    run = get_run_context().task_run
    assert run is not None
    return x, run.map_index, run.id


@task(batch_size=_BATCH, cache_key_fn=lambda context, parameters: f"batch-contract-{parameters['x']}")
def cached_count(x: int, folder: str) -> int:
    _bump(Path(folder) / f"runs-{x}")
    return x


def _hook_marks(task: Any, task_run: Any, state: Any) -> None:
    (Path(task_run.parameters["folder"]) / f"hook-{task_run.parameters['x']}-{state.name}").touch()


@task(batch_size=_BATCH, on_completion=[_hook_marks], on_failure=[_hook_marks])
def hooked(x: int, folder: str) -> int:
    if x == 2:
        raise BatchContractError("call 2 fails")
    return x


@task(batch_size=_BATCH)
def kills_worker_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(13)
    return x


@task(batch_size=_BATCH, max_concurrency=2)
def limited_interval(x: int, folder: str) -> int:
    start = time.time()
    time.sleep(0.1)
    with open(Path(folder) / "intervals", "a") as fh:
        fh.write(f"{start} {time.time()}\n")
    return x


@task(batch_size=_BATCH)
def plus_one_batched(x: int) -> int:
    return x + 1


@task(batch_size=_BATCH)
def sleeps_then_marks(x: int, folder: str) -> int:
    time.sleep(0.2)
    (Path(folder) / f"ran-{x}").touch()
    return x


@task(batch_size=_BATCH, log_prints=True, task_run_name="batch-log-{x}")
def logs_and_prints(x: int) -> str:
    get_run_logger().warning("logged by call %d", x)
    print(f"printed by call {x}")
    return get_run_context().task_run.id  # type: ignore[union-attr]


def _peak(lines: list[str]) -> int:
    events = sorted(e for line in lines for e in ((float(line.split()[0]), 1), (float(line.split()[1]), -1)))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


class TaskRunnerBatchingContract(HermeticHome):
    """Calls of a map that run in one batch keep every per-call behaviour."""

    def test_a_raising_call_fails_alone(self, runner: TaskRunner[Any]) -> None:
        """One call of a batch raising ends Failed; the other calls of its batch complete."""
        states = _states(runner, lambda: fails_on.map(range(8), 3))
        assert [s.type for s in states] == [StateType.COMPLETED] * 3 + [StateType.FAILED] + [StateType.COMPLETED] * 4
        assert [s.result(raise_on_failure=False) for i, s in enumerate(states) if i != 3] == [0, 10, 20, 40, 50, 60, 70]
        assert isinstance(states[3].result(raise_on_failure=False), BatchContractError)

    def test_a_retry_reruns_one_call(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A retry runs its own call again, not its batch: the others run exactly once."""
        states = _states(runner, lambda: flaky_on.map(range(8), 5, str(tmp_path)))
        assert all(s.is_completed() for s in states), [s.message for s in states]
        assert [s.result() for s in states] == [1, 1, 1, 1, 1, 2, 1, 1]
        attempts = {x: len((tmp_path / f"attempts-{x}").read_text()) for x in range(8)}
        assert attempts == {x: 2 if x == 5 else 1 for x in range(8)}

    def test_a_timeout_ends_one_call(self, runner: TaskRunner[Any]) -> None:
        """A call of a batch that runs past its timeout ends TimedOut; the others complete."""
        states = _states(runner, lambda: slow_on.map(range(8), 1))
        assert states[1].name == "TimedOut", states[1]
        assert [s.result() for i, s in enumerate(states) if i != 1] == [0, 2, 3, 4, 5, 6, 7]

    def test_each_call_has_its_own_run(self, runner: TaskRunner[Any]) -> None:
        """Every call of a batch has its own task run id and its own map_index."""
        states = _states(runner, lambda: whoami.map(range(10)))
        results = [s.result() for s in states]
        assert [(x, index) for x, index, _ in results] == [(i, i) for i in range(10)]
        assert len({run_id for _, _, run_id in results}) == 10

    def test_the_cache_is_per_call(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A cached task's calls are each looked up on their own: a second map is all cache hits."""
        first = _states(runner, lambda: cached_count.map(range(6), str(tmp_path)))
        again = _states(runner, lambda: cached_count.map(range(6), str(tmp_path)))
        assert [s.result() for s in first] == [s.result() for s in again] == list(range(6))
        assert [s.name for s in again] == ["Cached"] * 6
        assert all(len((tmp_path / f"runs-{x}").read_text()) == 1 for x in range(6))

    def test_hooks_run_per_call(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """Each call of a batch runs its own completion or failure hooks."""
        _states(runner, lambda: hooked.map(range(6), str(tmp_path)))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == sorted(f"hook-{x}-{'Failed' if x == 2 else 'Completed'}" for x in range(6))

    def test_logs_are_per_call(self, runner: TaskRunner[Any], caplog: pytest.LogCaptureFixture) -> None:
        """Each call of a batch logs and prints once, under its own run name and id, in the flow process."""
        with caplog.at_level("INFO"):
            states = _states(runner, lambda: logs_and_prints.map(range(8)))
        ids = [s.result() for s in states]
        for kind in ("logged", "printed"):
            records = sorted(
                (r for r in caplog.records if r.getMessage().startswith(f"{kind} by call ")),
                key=lambda r: int(r.getMessage().rsplit(" ", 1)[1]),
            )
            seen = [(r.getMessage(), getattr(r, "task_run_name", None), getattr(r, "task_run_id", None)) for r in records]
            assert seen == [(f"{kind} by call {x}", f"batch-log-{x}", ids[x]) for x in range(8)]

    def test_a_call_that_kills_its_worker_ends_crashed_alone(self, runner: TaskRunner[Any]) -> None:
        """A call that ends its worker process ends Crashed; the other calls of its batch complete."""
        if not runner.requires_pickling:
            pytest.skip("the runner runs tasks in the flow's process: a task ending it ends the flow")
        states = _states(runner, lambda: kills_worker_on.map(range(8), 2))
        assert states[2].is_crashed(), f"the call that killed its worker must end Crashed, not {states[2].name}"
        assert [s.result() for i, s in enumerate(states) if i != 2] == [0, 1, 3, 4, 5, 6, 7]

    def test_limits_hold_inside_batches(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """max_concurrency still bounds the runs in flight when the task has a batch size."""
        states = _states(runner, lambda: limited_interval.map(range(6), str(tmp_path)))
        assert [s.result() for s in states] == list(range(6))
        assert _peak((tmp_path / "intervals").read_text().splitlines()) <= 2

    def test_upstreams_of_batched_calls(self, runner: TaskRunner[Any]) -> None:
        """A batched map over a batched map gets each upstream's own result; a failed upstream blocks only its own call."""
        states = _states(runner, lambda: plus_one_batched.map(fails_on.map(range(8), 6)))
        assert [s.result() for i, s in enumerate(states) if i != 6] == [1, 11, 21, 31, 41, 51, 71]
        assert states[6].name == "NotReady"

    def test_cancelling_stops_batches_not_started(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """When the flow body raises, calls whose batch has not started end Cancelled and never run."""
        if not runner.concurrent:
            pytest.skip("the runner runs each call at submission: nothing is ever pending")
        count = 40
        stash: list[Any] = []

        @flow(task_runner=runner)
        def f() -> None:
            stash.extend(sleeps_then_marks.map(range(count), str(tmp_path)))
            raise BatchContractError("stop")

        assert f(return_state=True).is_failed()
        done, not_done = wait(stash, timeout=120)
        assert not not_done, "every call must end once the flow run is cancelled"
        assert any(fut.state.is_cancelled() for fut in stash)
        time.sleep(0.5)
        assert len(list(tmp_path.iterdir())) < count


def _states(runner: TaskRunner[Any], make: Any) -> list[Any]:
    """Run ``make()`` (a map) in a flow on ``runner`` and return each call's final State, in order."""
    stash: list[Any] = []

    @flow(task_runner=runner)
    def f() -> None:
        futures = make()
        stash.extend(futures)
        wait(futures, timeout=120)

    f()
    assert all(fut.done() for fut in stash), "every call of the map must end"
    return [fut.state for fut in stash]
