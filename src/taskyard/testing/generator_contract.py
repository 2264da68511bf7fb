"""The generator-task part of the runner contract (mixed into ``TaskRunnerContract``).

A generator task called in a flow streams its values in the flow's thread on
every runner; submitted or mapped, it runs where the runner puts it and its
result is the list of the values it yielded. Retries and the time limit
cover the iteration itself. The tasks live at module level so that runners
which ship calls can import them on their workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from taskyard import flow, task
from taskyard.runners.base import TaskRunner
from taskyard.testing.hermetic import HermeticHome
from taskyard.states import StateType

__all__ = ("TaskRunnerGeneratorContract",)


class GeneratorContractError(Exception):
    """Raised by the contract's failing generator (picklable, distinct)."""


@task
def produce(n: int) -> Iterator[int]:
    for i in range(n):
        yield 10 * i


@task
async def produce_async(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield 10 * i


@task(retries=2)
def produce_flaky(path: str, failures: int) -> Iterator[str]:
    attempts = Path(path)
    attempt = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(attempt))
    yield f"first of attempt {attempt}"
    if attempt <= failures:
        raise GeneratorContractError(f"attempt {attempt} broke mid-stream")
    yield f"second of attempt {attempt}"


@task(timeout_seconds=0.5)
def produce_slowly() -> Iterator[int]:
    yield 1
    for _ in range(2400):  # 120 s of short sleeps, so an abandoned helper thread can be stopped
        time.sleep(0.05)
    yield 2


@task
def produce_logged(log: list[str], n: int) -> Iterator[int]:
    for i in range(n):
        log.append(f"produced {i}")
        yield i


class TaskRunnerGeneratorContract(HermeticHome):
    """Generator tasks (sync and async): streamed when called, listed when submitted."""

    def test_submitted_generator_result_is_the_list_of_values(self, runner: TaskRunner[Any]) -> None:
        """submit and map of a generator task give the list of its yielded values, sync and async."""

        @flow(task_runner=runner)
        def f() -> tuple[Any, Any, Any]:
            return produce.submit(3).result(), produce_async.submit(2).result(), produce.map([0, 1, 2]).result()

        assert f() == ([0, 10, 20], [0, 10], [[], [0], [0, 10]])

    def test_generator_called_in_a_flow_streams(self, runner: TaskRunner[Any]) -> None:
        """Called in a flow, values reach the caller one by one while the run is going; it completes at the end."""
        log: list[str] = []

        def on_completion(task: Any, task_run: Any, state: Any) -> None:
            log.append(f"completed with {state.result()}")

        streaming = produce_logged.with_options(on_completion=[on_completion])

        @flow(task_runner=runner)
        def f() -> None:
            for value in streaming(log, 2):
                log.append(f"consumed {value}")

        f()
        assert log == ["produced 0", "consumed 0", "produced 1", "consumed 1", "completed with [0, 1]"]

    def test_retries_cover_the_iteration(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A generator that raises mid-stream is retried from the start; the result is the successful attempt's."""

        @flow(task_runner=runner)
        def f() -> tuple[Any, int]:
            future = produce_flaky.submit(str(tmp_path / "attempts"), 1)
            return future.result(), future.state.run_count

        assert f() == (["first of attempt 2", "second of attempt 2"], 2)

    def test_failure_after_retries_fails_the_run(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A generator failing on every attempt ends Failed with its exception."""

        @flow(task_runner=runner)
        def f() -> Any:
            future = produce_flaky.submit(str(tmp_path / "attempts"), 5)
            future.wait()
            return future.state.type, future.result(raise_on_failure=False)

        state_type, error = f()
        assert state_type is StateType.FAILED
        assert isinstance(error, GeneratorContractError) and "attempt 3" in str(error)

    def test_timeout_covers_the_iteration(self, runner: TaskRunner[Any]) -> None:
        """A generator that stalls after its first value ends TimedOut, promptly."""

        @flow(task_runner=runner)
        def f() -> tuple[str, str]:
            future = produce_slowly.submit()
            future.wait()
            called = produce_slowly(return_state=True)
            return future.state.name, called.name

        started = time.monotonic()
        assert f() == ("TimedOut", "TimedOut")
        # The generator stalls 120 s; 60 s leaves room for a cluster's start and stop on a loaded machine.
        assert time.monotonic() - started < 60, "the flow waited for the stalled generator"
