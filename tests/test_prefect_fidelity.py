"""Behaviours a Prefect flow relies on (issue 12): each as Prefect does it, or as docs/coming-from-prefect.md says."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from taskyard import as_completed, flow, quote, task, wait
from taskyard.exceptions import MappingLengthMismatch, ReservedArgumentError
from taskyard.states import Completed, Failed, State


@task
def ident(x: Any) -> Any:
    return x


@task
def boom(x: Any) -> Any:
    raise ValueError(f"boom {x}")


class TestAsyncHooks:
    def test_async_task_hooks_are_awaited(self) -> None:
        """async def on_completion / on_failure hooks of a task run to their end."""
        seen: list[str] = []

        async def done(task: Any, run: Any, state: State[Any]) -> None:
            await asyncio.sleep(0)
            seen.append(f"done:{state.name}")

        async def failed(task: Any, run: Any, state: State[Any]) -> None:
            await asyncio.sleep(0)
            seen.append(f"failed:{state.name}")

        good = ident.with_options(on_completion=[done])
        bad = boom.with_options(on_failure=[failed])

        @flow
        def f() -> None:
            good(1)
            bad(2, return_state=True)
            good.submit(3).wait()

        f()
        assert seen == ["done:Completed", "failed:Failed", "done:Completed"]

    def test_async_hooks_in_an_async_flow_are_awaited_on_its_loop(self) -> None:
        """In an async flow, async flow and task hooks are awaited."""
        seen: list[str] = []

        async def hook(owner: Any, run: Any, state: State[Any]) -> None:
            await asyncio.sleep(0)
            seen.append(f"{type(owner).__name__}:{state.name}")

        @task(on_completion=[hook])
        async def t() -> int:
            return 1

        @flow(on_running=[hook], on_completion=[hook])
        async def f() -> int:
            return await t()

        assert asyncio.run(f()) == 1
        assert seen == ["Flow:Running", "Task:Completed", "Flow:Completed"]

    def test_an_async_hook_that_raises_is_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """An async hook that raises is logged; the run's state is unchanged."""

        async def broken(task: Any, run: Any, state: State[Any]) -> None:
            raise RuntimeError("hook broke")

        with caplog.at_level(logging.ERROR, logger="taskyard"):
            state = ident.with_options(on_completion=[broken])(5, return_state=True)
        assert state.is_completed() and state.result() == 5
        assert any("hook broke" in (r.exc_text or "") or r.exc_info for r in caplog.records)


class TestQuoteOnDirectCalls:
    def test_a_direct_call_gets_the_quoted_value(self) -> None:
        """A task called directly with quote(x) receives x, as submit/map do."""

        @flow
        def f() -> tuple[Any, Any]:
            return ident(quote([1, 2])), ident.submit(quote([3])).result()

        assert f() == ([1, 2], [3])
        assert ident(quote("outside a flow")) == "outside a flow"


class TestLogPrintsOptOut:
    def test_log_prints_false_on_a_task_prints_to_stdout(self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
        """log_prints=False on a task keeps its print() out of the logs of a log_prints=True flow."""

        @task(log_prints=False)
        def quiet() -> None:
            print("quiet line")

        @task
        def loud() -> None:
            print("loud line")

        @flow(log_prints=True)
        def f() -> None:
            quiet()
            loud()

        with caplog.at_level(logging.INFO):
            f()
        logged = [r.getMessage() for r in caplog.records]
        assert "quiet line" in capsys.readouterr().out
        assert not any("quiet line" in m for m in logged)
        assert any("loud line" in m for m in logged)

    def test_log_prints_false_on_a_subflow_opts_out(self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
        """A log_prints=False subflow prints to stdout inside a log_prints=True flow; None inherits."""

        @flow(log_prints=False)
        def quiet_child() -> None:
            print("child line")

        @flow
        def inheriting_child() -> None:
            print("inherited line")

        @flow(log_prints=True)
        def parent() -> None:
            quiet_child()
            inheriting_child()

        with caplog.at_level(logging.INFO):
            parent()
        logged = [r.getMessage() for r in caplog.records]
        assert "child line" in capsys.readouterr().out
        assert not any("child line" in m for m in logged)
        assert any("inherited line" in m for m in logged)


@task
def with_keywords(x: int, **kw: Any) -> tuple[int, dict[str, Any]]:
    return x, kw


class TestMapOverKeywordArguments:
    def test_iterables_in_kwargs_are_mapped(self) -> None:
        """map() maps iterables passed through **kwargs, one item per run."""

        @flow
        def f() -> list[Any]:
            return with_keywords.map([1, 2], y=[3, 4], z="whole").result()

        assert f() == [(1, {"y": 3, "z": "whole"}), (2, {"y": 4, "z": "whole"})]

    def test_unmapped_in_kwargs_goes_whole(self) -> None:
        """unmapped(...) passed through **kwargs goes whole to every run."""
        from taskyard import unmapped

        @flow
        def f() -> list[Any]:
            return with_keywords.map([1, 2], y=unmapped([3, 4])).result()

        assert f() == [(1, {"y": [3, 4]}), (2, {"y": [3, 4]})]

    def test_kwargs_of_another_length_fail_naming_them(self) -> None:
        """An iterable in **kwargs of another length is a MappingLengthMismatch naming it."""

        @flow
        def f() -> None:
            with_keywords.map([1, 2], y=[3, 4, 5])

        with pytest.raises(MappingLengthMismatch, match="y=3"):
            f()


class TestAsCompletedWithZeroTimeout:
    def test_done_futures_are_yielded_with_timeout_zero(self) -> None:
        """as_completed(done futures, timeout=0) yields them, as wait(..., timeout=0) reports them done."""

        @flow
        def f() -> tuple[int, int]:
            future = ident.submit(1)
            future.wait()
            done, _ = wait([future], timeout=0)
            return len(done), len(list(as_completed([future], timeout=0)))

        assert f() == (1, 1)


class TestReservedFlowParameters:
    @pytest.mark.parametrize("name", ["return_state", "wait_for"])
    def test_a_reserved_parameter_name_fails_at_definition(self, name: str) -> None:
        """A flow parameter named return_state or wait_for is refused at definition, naming it."""
        namespace: dict[str, Any] = {}
        exec(f"def fn({name}=None):\n    return {name}\n", namespace)
        with pytest.raises(ReservedArgumentError, match=name):
            flow(namespace["fn"])


class TestReturnedStates:
    def test_a_returned_state_keeps_its_message(self) -> None:
        """A flow returning Completed(message=...) ends in that State: type, name, message and data."""

        @flow
        def f() -> Any:
            return Completed(data=5, message="all good")

        state = f(return_state=True)
        assert (state.type, state.name, state.message, state.result()) == ("COMPLETED", "Completed", "all good", 5)

    def test_a_returned_failed_state_fails_the_run(self) -> None:
        """A flow returning Failed(message=...) ends Failed with that message."""

        @flow
        def f() -> Any:
            return Failed(message="not today")

        state = f(return_state=True)
        assert state.is_failed() and state.message == "not today"
