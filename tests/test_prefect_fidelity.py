"""Behaviours a Prefect flow relies on (issue 12): each as Prefect does it, or as docs/coming-from-prefect.md says."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
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


class TestReturnStateOnSubmitAndMap:
    def test_submit_return_state_gives_the_final_state(self) -> None:
        """submit(..., return_state=True) waits and returns the run's final State."""

        @flow
        def f() -> tuple[Any, ...]:
            good, bad = ident.submit(1, return_state=True), boom.submit(2, return_state=True)
            return good.is_completed(), good.result(), bad.is_failed(), type(bad.result(raise_on_failure=False))

        assert f() == (True, 1, True, ValueError)

    def test_map_return_state_gives_the_states_in_order(self) -> None:
        """map(..., return_state=True) returns the runs' final States in order."""

        @flow
        def f() -> list[State[Any]]:
            return ident.map([3, 1, 2], return_state=True)

        states = f()
        assert type(states) is list and [s.result() for s in states] == [3, 1, 2]


@flow
def child_flow() -> str:
    return "child ran"


class TestSubflowCalls:
    def test_wait_for_waits_before_the_subflow_runs(self, tmp_path: Any) -> None:
        """A subflow called with wait_for=[future] starts after that run is done."""
        marker = tmp_path / "marker"

        @task
        def write() -> None:
            import time

            time.sleep(0.2)
            marker.write_text("x")

        @flow
        def reader() -> bool:
            return marker.exists()

        @flow
        def parent() -> bool:
            return reader(wait_for=[write.submit()])

        assert parent() is True

    def test_a_failed_wait_for_upstream_means_the_subflow_never_runs(self) -> None:
        """With a failed run in wait_for, the subflow does not run and ends NotReady."""
        from taskyard.exceptions import UpstreamTaskError

        @flow
        def parent() -> State[Any]:
            return child_flow(wait_for=[boom.submit(1)], return_state=True)

        state = parent(return_state=True)
        assert state.is_failed()
        inner = state.result(raise_on_failure=False)
        assert isinstance(inner, UpstreamTaskError)

    def test_return_state_with_bad_parameters_gives_a_failed_state(self) -> None:
        """Calling a flow with return_state=True and an invalid parameter returns a Failed State."""
        from taskyard.exceptions import ParameterValidationError

        @flow
        def typed(x: int) -> int:
            return x

        state = typed(x="many", return_state=True)  # type: ignore[arg-type]
        assert state.is_failed() and isinstance(state.result(raise_on_failure=False), ParameterValidationError)
        with pytest.raises(ParameterValidationError, match="'x'"):
            typed(x="many")  # type: ignore[arg-type]

    def test_returned_futures_come_back_as_states(self) -> None:
        """A flow returning a future and a return_state State gives back two States; one failed fails the run."""

        @flow
        def ok() -> Any:
            return ident.submit(1), ident(2, return_state=True)

        @flow
        def not_ok() -> Any:
            return [ident.submit(1), boom.submit(2)]

        first, second = ok()
        assert (first.result(), second.result()) == (1, 2)
        state = not_ok(return_state=True)
        assert state.is_failed()
        with pytest.raises(ValueError, match="boom 2"):
            state.result()


class TestAsync:
    def test_state_results_are_awaitable_in_async_code(self) -> None:
        """In an async flow, await state.result(), state.aresult(), future.result_async() and wait_async() work."""

        @task
        def sync_reader(x: int) -> int:
            return ident(x, return_state=True).result()  # sync code: result() is the value

        @flow
        async def f() -> tuple[Any, ...]:
            future = ident.submit(5)
            await future.wait_async()
            state = future.state
            return (
                await state.result(),
                await state.aresult(),
                await future.result_async(),
                future.result(),
                await ident(6, return_state=True).result(),
                sync_reader(7),
            )

        assert asyncio.run(f()) == (5, 5, 5, 5, 6, 7)

    def test_result_async_times_out(self) -> None:
        """result_async(timeout=...) raises TimeoutError when the run is not done in time."""

        @task
        def slow() -> None:
            import time

            time.sleep(2)

        @flow
        async def f() -> str:
            future = slow.submit()
            try:
                await future.result_async(timeout=0.05)
            except TimeoutError:
                return "timed out"
            return "done"

        assert asyncio.run(f()) == "timed out"

    def test_outside_async_code_result_is_the_value(self) -> None:
        """Outside the body of an async task or flow, State.result() returns the value."""
        assert Completed(data=3).result() == 3

        async def plain() -> int:
            return int(Completed(data=4).result())

        assert asyncio.run(plain()) == 4


class Counter:
    step = 10

    def __init__(self, start: int) -> None:
        self.start = start

    @task
    def add(self, x: int) -> int:
        return self.start + x

    @classmethod
    @task
    def scaled(cls, x: int) -> int:
        return cls.step * x

    @task
    @classmethod
    def scaled_too(cls, x: int) -> int:
        return cls.step * x + 1

    @staticmethod
    @task
    def negate(x: int) -> int:
        return -x

    @flow
    def total(self, xs: list[int]) -> int:
        return sum(self.add.map(xs).result())


class TestMethods:
    def test_tasks_on_methods_bind_self_and_cls(self) -> None:
        """@task on instance, class and static methods binds self / cls like the function."""
        counter = Counter(100)

        @flow
        def f() -> list[int]:
            return [
                counter.add(1),
                counter.add.submit(2).result(),
                Counter.scaled(3),
                Counter.scaled_too(3),
                counter.scaled_too.submit(1).result(),
                Counter.negate(4),
                counter.negate.submit(5).result(),
            ]

        assert f() == [101, 102, 30, 31, 11, -4, -5]

    def test_a_flow_on_a_method_binds_self(self) -> None:
        """@flow on an instance method binds self; its parameters exclude self."""
        assert Counter(1).total([1, 2]) == 5

    def test_a_bound_task_ships_to_another_process(self) -> None:
        """A task bound to an instance runs on the process runner (the instance travels with it)."""

        @flow(task_runner="processes")
        def f() -> int:
            return Counter(7).add.submit(1).result()

        assert f() == 8


class TestHookDecorators:
    def test_task_hook_decorators_register_hooks(self) -> None:
        """@my_task.on_completion / .on_failure register hooks and return the function."""
        seen: list[str] = []
        t = ident.with_options()
        b = boom.with_options()

        @t.on_completion
        def done(task: Any, run: Any, state: State[Any]) -> None:
            seen.append("done")

        @b.on_failure
        def failed(task: Any, run: Any, state: State[Any]) -> None:
            seen.append("failed")

        assert callable(done) and list(t.on_completion) == [done]
        t(1)
        b(1, return_state=True)
        assert seen == ["done", "failed"]
        assert list(t.with_options(name="copy").on_completion) == [done]

    def test_flow_hook_decorators_register_hooks(self) -> None:
        """@my_flow.on_running / .on_completion / .on_failure register flow hooks."""
        seen: list[str] = []

        @flow
        def f() -> int:
            return 1

        @f.on_running
        def running(flow: Any, run: Any, state: State[Any]) -> None:
            seen.append(state.name)

        @f.on_completion
        def completed(flow: Any, run: Any, state: State[Any]) -> None:
            seen.append(state.name)

        f()
        assert seen == ["Running", "Completed"]


class TestStateConstructors:
    def test_prefect_style_constructors(self) -> None:
        """Completed(data=, message=), Failed(data=), Crashed(message=) and State(type=, ...) build States."""
        from taskyard.states import Crashed
        from taskyard import StateType

        done = Completed(data=1, message="ok")
        assert (done.data, done.message, done.result()) == (1, "ok", 1)
        error = ValueError("v")
        assert Failed(data=error, message="bad").result(raise_on_failure=False) is error
        crashed = Crashed(message="lost")
        assert crashed.is_crashed() and crashed.message == "lost"
        made = State(type=StateType.COMPLETED, message="hand made", data=3)
        assert (made.name, made.result(), made.message) == ("Completed", 3, "hand made")
        assert State(type=StateType.FAILED).name == "Failed"


class TestRunContext:
    def test_task_run_fields(self) -> None:
        """get_run_context().task_run has flow_run_id, state_name, start_time, parameters."""
        from datetime import datetime

        from taskyard import get_run_context

        @task
        def look(x: int) -> dict[str, Any]:
            ctx = get_run_context()
            run = ctx.task_run
            assert run is not None and ctx.flow_run is not None
            return {
                "same_flow": run.flow_run_id == ctx.flow_run.id,
                "state": (run.state_type, run.state_name),
                "started": isinstance(run.start_time, datetime),
                "parameters": ctx.parameters,
            }

        @flow
        def f() -> dict[str, Any]:
            return look.submit(3).result()

        assert f() == {"same_flow": True, "state": ("RUNNING", "Running"), "started": True, "parameters": {"x": 3}}

    def test_hooks_see_the_final_state_name(self) -> None:
        """In a hook, task_run.state_name and end_time describe the final state."""
        seen: list[Any] = []

        def hook(task: Any, run: Any, state: State[Any]) -> None:
            seen.append((run.state_name, run.end_time is not None))

        ident.with_options(on_completion=hook)(1)
        assert seen == [("Completed", True)]

    def test_runtime_modules(self) -> None:
        """taskyard.runtime.flow_run / task_run read the current run; outside a run they are empty."""
        from taskyard.runtime import flow_run, task_run

        @task(tags=["t"])
        def look() -> tuple[Any, ...]:
            return task_run.name, task_run.task_name, task_run.tags, task_run.parameters, flow_run.flow_name

        @flow(flow_run_name="the-run")
        def named() -> tuple[Any, ...]:
            return (*look(), flow_run.name)

        name, task_name, run_tags, parameters, flow_name, flow_run_name = named()
        assert (task_name, run_tags, parameters, flow_name, flow_run_name) == ("look", ["t"], {}, "named", "the-run")
        assert name.startswith("look-")
        assert (flow_run.id, task_run.name, task_run.tags) == (None, None, [])


class TestImportPaths:
    def test_prefect_shaped_modules_re_export(self) -> None:
        """from taskyard.X import Y works for Prefect's X and Y that taskyard has."""
        import taskyard
        from taskyard import cache_policies, caching, logs, runners
        from taskyard.futures import resolve_futures_to_results, resolve_futures_to_states
        from taskyard.logging import get_run_logger
        from taskyard.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
        from taskyard.tasks import exponential_backoff, task_input_hash
        from taskyard.utilities.annotations import allow_failure, quote, unmapped

        assert ThreadPoolTaskRunner is runners.ThreadPoolTaskRunner
        assert ProcessPoolTaskRunner is runners.ProcessPoolTaskRunner
        assert cache_policies.NO_CACHE is cache_policies.NONE is caching.NONE
        assert get_run_logger is logs.get_run_logger
        assert (unmapped, quote, allow_failure) == (taskyard.unmapped, taskyard.quote, taskyard.allow_failure)
        assert (exponential_backoff, task_input_hash) == (taskyard.exponential_backoff, taskyard.task_input_hash)
        assert callable(resolve_futures_to_states) and callable(resolve_futures_to_results)


class TestOptionsAndHelpers:
    def test_task_tags_is_a_set(self) -> None:
        """task.tags is a set, as in Prefect."""
        assert task(tags=["a", "b"])(lambda: None).tags == {"a", "b"}
        assert isinstance(task(lambda: None).tags, set)

    def test_cache_policies_subtract_a_parameter(self) -> None:
        """DEFAULT - "name" keys on every input but that one; without INPUTS it changes nothing."""
        from taskyard.caching import DEFAULT, INPUTS, TASK_SOURCE, CacheContext
        from taskyard.context import TaskRunInfo

        t = task(lambda x, client: x)
        ctx = CacheContext(t, TaskRunInfo("id", "n", "t"), None)
        policy = DEFAULT - "client"
        assert policy.compute_key(ctx, {"x": 1, "client": "a"}) == policy.compute_key(ctx, {"x": 1, "client": "b"})
        assert policy.compute_key(ctx, {"x": 1, "client": "a"}) != policy.compute_key(ctx, {"x": 2, "client": "a"})
        assert (INPUTS - "x").compute_key(ctx, {"x": 1}) == (INPUTS - "x").compute_key(ctx, {"x": 2})
        assert TASK_SOURCE - "x" is TASK_SOURCE

    def test_cached_run_with_cache_result_in_memory_false_reads_back(self, tmp_path: Any) -> None:
        """cache_result_in_memory=False keeps only the persisted result; result() reads it back."""
        from taskyard.results import PersistedResult

        t = task(persist_result=True, cache_result_in_memory=False, result_storage=str(tmp_path))(lambda: {"big": 1})
        state = t(return_state=True)
        assert isinstance(state.data, PersistedResult) and state.result() == {"big": 1}
        kept = task(persist_result=True, result_storage=str(tmp_path))(lambda: 2)(return_state=True)
        assert kept.data == 2

    def test_futures_helpers(self) -> None:
        """resolve_futures_to_states / _results replace futures anywhere in a value."""
        from taskyard.futures import resolve_futures_to_results, resolve_futures_to_states

        @flow
        def f() -> tuple[Any, Any]:
            value = {"a": [ident.submit(1)], "b": ident.submit(2)}
            states = resolve_futures_to_states(value)
            return states["a"][0].name, resolve_futures_to_results(value)

        assert f() == ("Completed", {"a": [1], "b": 2})

    @pytest.mark.parametrize("options", [{"timeout_seconds": -1}, {"cache_expiration": -5}])
    def test_negative_durations_fail_at_definition(self, options: dict[str, Any]) -> None:
        """A negative timeout_seconds or cache_expiration is a ValueError when the task is defined."""
        with pytest.raises(ValueError, match=next(iter(options))):
            task(**options)(lambda: None)

    @pytest.mark.parametrize("returned", [None, 5])
    def test_a_run_name_callable_must_return_a_string(self, returned: Any) -> None:
        """A task_run_name / flow_run_name callable returning a non-string is a TypeError."""
        t = task(task_run_name=lambda: returned)(lambda: None)
        with pytest.raises(TypeError, match="must return a string"):
            t()
        with pytest.raises(TypeError, match="must return a string"):
            flow(flow_run_name=lambda: returned)(lambda: None)()

    def test_future_list_result_timeout_bounds_the_whole_wait(self) -> None:
        """FutureList.result(timeout=t) gives up after about t in all, not t per future."""
        import time

        @task
        def nap(x: float) -> float:
            time.sleep(x)
            return x

        @flow(task_runner="sequential")
        def f() -> str:
            return "ran"

        @flow(task_runner="threads")
        def g() -> float:
            futures = nap.map([0.5, 0.5, 0.5, 0.5])
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                futures.result(timeout=0.1)
            return time.monotonic() - started

        assert f() == "ran"
        assert g() < 0.45  # each future alone would have taken 0.1 s: 0.4 s for four

    def test_process_pool_initializer_runs_in_each_worker(self, tmp_path: Any) -> None:
        """ProcessPoolTaskRunner(initializer=, initargs=) runs it once in each worker process."""
        import os

        from taskyard.runners import ProcessPoolTaskRunner

        def init(folder: str) -> None:
            (Path(folder) / str(os.getpid())).write_text("up")

        @task
        def where(i: int) -> int:
            return os.getpid()

        runner = ProcessPoolTaskRunner(max_workers=2, initializer=init, initargs=(str(tmp_path),))

        @flow(task_runner=runner)
        def f() -> set[int]:
            return set(where.map(range(8)).result())

        pids = f()
        assert {int(p.name) for p in tmp_path.iterdir()} >= pids
