"""taskyard.task_engine: Prefect's entry points for running one task, and generator tasks."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, task
from taskyard.context import FlowRunInfo
from taskyard.states import State
from taskyard.task_engine import (
    run_generator_task_async,
    run_generator_task_sync,
    run_task,
    run_task_async,
    run_task_sync,
)


@task(retries=2)
def flaky_add(path: str, x: int, y: int) -> int:
    attempts = Path(path)
    count = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(count))
    if count < 2:
        raise ValueError("first attempt fails")
    return x + y


@task
def add(x: int, y: int) -> int:
    return x + y


@task
async def add_async(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@task
def flow_run_name() -> str:
    ctx = get_run_context()
    assert ctx.flow_run is not None
    return ctx.flow_run.name


@task
def count(n: int) -> Iterator[int]:
    yield from range(n)


@task
async def count_async(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class TestRunTask:
    def test_outside_a_flow_with_retries(self, tmp_path: Path) -> None:
        """run_task_sync runs the task through the engine: its retries apply."""
        path = str(tmp_path / "attempts")
        state = run_task_sync(flaky_add, parameters={"path": path, "x": 1, "y": 2}, return_type="state")
        assert isinstance(state, State) and state.result() == 3 and state.run_count == 2

    def test_result_or_raise(self) -> None:
        """return_type="result" returns the value, and raises a failed run's exception."""
        assert run_task_sync(add, parameters={"x": 1, "y": 2}) == 3
        with pytest.raises(TypeError):
            run_task_sync(add, parameters={"x": 1, "y": "2"})

    def test_run_task_picks_the_entry_point(self) -> None:
        """run_task returns a value for a sync task, a coroutine for an async one, a generator for a generator."""
        assert run_task(add, parameters={"x": 2, "y": 2}) == 4
        coroutine = run_task(add_async, parameters={"x": 2, "y": 3})
        assert inspect.iscoroutine(coroutine) and asyncio.run(coroutine) == 5
        assert list(run_task(count, parameters={"n": 3})) == [0, 1, 2]

    def test_async_entry_point(self) -> None:
        """run_task_async runs sync and async tasks on the running loop."""

        async def main() -> tuple[int, int]:
            return await run_task_async(add_async, parameters={"x": 1, "y": 1}), await run_task_async(
                add, parameters={"x": 2, "y": 2}
            )

        assert asyncio.run(main()) == (2, 4)

    def test_inside_a_flow_with_wait_for_and_futures(self) -> None:
        """In a flow, futures in parameters are resolved and wait_for is waited on; the run belongs to the flow."""

        @flow(flow_run_name="outer")
        def f() -> tuple[int, str]:
            first = add.submit(1, 1)
            later = add.submit(5, 5)
            total = run_task_sync(add, parameters={"x": first, "y": 1}, wait_for=[later])
            assert later.done()
            return total, run_task_sync(flow_run_name)

        assert f() == (3, "outer")

    def test_context_carries_the_flow_run(self) -> None:
        """A run made away from its flow joins the flow run given in context."""
        info = FlowRunInfo("f" * 32, "far-away", "remote-flow")
        assert run_task_sync(flow_run_name, context={"flow_run": info, "tags": ["x"]}) == "far-away"

    def test_bad_arguments_are_clear_errors(self) -> None:
        """An unknown return_type, context key, or a missing parameter fails with a clear error."""
        with pytest.raises(ValueError, match="return_type"):
            run_task_sync(add, parameters={"x": 1, "y": 1}, return_type="value")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown key"):
            run_task_sync(add, parameters={"x": 1, "y": 1}, context={"settings": {}})
        with pytest.raises(TypeError, match="'y'"):
            run_task_sync(add, parameters={"x": 1})

    def test_given_task_run_id_names_the_run(self) -> None:
        """task_run_id becomes the run's id."""

        @task
        def my_id() -> str:
            ctx = get_run_context()
            assert ctx.task_run is not None
            return ctx.task_run.id

        assert run_task_sync(my_id, task_run_id="a" * 32) == "a" * 32


class TestGeneratorEntryPoints:
    def test_sync_generator_streams(self) -> None:
        """run_generator_task_sync yields values as produced; return_type="state" is refused."""
        assert list(run_generator_task_sync(count, parameters={"n": 3})) == [0, 1, 2]
        with pytest.raises(ValueError, match="return_type='result'"):
            run_generator_task_sync(count, parameters={"n": 3}, return_type="state")

    def test_async_generator_streams(self) -> None:
        """run_generator_task_async is an async generator of the values."""

        async def main() -> list[int]:
            return [x async for x in run_generator_task_async(count_async, parameters={"n": 3})]

        assert asyncio.run(main()) == [0, 1, 2]

    def test_run_task_sync_of_a_generator_gives_the_list(self) -> None:
        """run_task_sync on a generator task returns the list of its values (its State holds it too)."""
        assert run_task_sync(count, parameters={"n": 2}) == [0, 1]
        assert run_task_sync(count_async, parameters={"n": 2}, return_type="state").result() == [0, 1]


class TestGeneratorTasks:
    def test_isgenerator(self) -> None:
        """Task.isgenerator is true for sync and async generator functions only."""
        assert count.isgenerator and count_async.isgenerator and not add.isgenerator

    def test_stopping_early_completes_the_run(self) -> None:
        """A caller that breaks out closes the generator; the run completes and its hooks run."""
        seen: list[str] = []
        closed: list[bool] = []

        @task(on_completion=[lambda t, r, s: seen.append(s.name)])
        def endless() -> Iterator[int]:
            try:
                i = 0
                while True:
                    yield i
                    i += 1
            finally:
                closed.append(True)

        for value in endless():
            if value == 2:
                break
        assert closed == [True] and seen == ["Completed"]

    def test_caller_code_between_values_is_not_in_the_task_run(self) -> None:
        """The loop body runs in the flow's context: it may submit, and sees no task run."""

        @flow
        def f() -> list[int]:
            futures = []
            for value in count(3):
                assert get_run_context().task_run is None
                futures.append(add.submit(value, 100))
            return [fut.result() for fut in futures]

        assert f() == [100, 101, 102]

    def test_failure_raises_in_the_caller_after_the_values(self) -> None:
        """A generator that raises gives its values, then the caller gets its exception."""

        @task
        def breaks() -> Iterator[int]:
            yield 1
            raise KeyError("gone")

        got: list[int] = []
        with pytest.raises(KeyError, match="gone"):
            for value in breaks():
                got.append(value)
        assert got == [1]

    def test_cached_generator_replays_its_values(self, tmp_path: Path) -> None:
        """A cache hit yields the cached values without running the generator."""
        ran: list[int] = []

        @task(cache_key_fn=lambda ctx, params: f"gen-{params['n']}", result_storage=str(tmp_path))
        def cached(n: int) -> Iterator[int]:
            ran.append(n)
            yield from range(n)

        assert list(cached(3)) == [0, 1, 2]
        assert list(cached(3)) == [0, 1, 2]
        assert ran == [3]

    def test_async_generator_in_a_sync_flow_streams(self) -> None:
        """An async generator task called in a sync flow is iterated with a plain for loop."""

        @flow
        def f() -> list[int]:
            return list(count_async(3))

        assert f() == [0, 1, 2]

    def test_async_generator_in_an_async_flow(self) -> None:
        """In an async flow an async generator task is iterated with async for."""

        @flow
        async def f() -> list[Any]:
            return [value async for value in count_async(3)]

        assert asyncio.run(f()) == [0, 1, 2]

    def test_return_state_collects(self) -> None:
        """return_state=True runs the generator to its end and gives a State holding the list."""
        state = count(3, return_state=True)
        assert state.is_completed() and state.result() == [0, 1, 2]
