"""The task-runner contract, as pytest tests every runner must pass.

Subclass :class:`TaskRunnerContract` and provide a ``runner`` fixture that
returns an *unstarted* runner; each flow run in the tests uses a duplicate
of it, the way real flow runs do. Tests that need a capability a runner
does not claim (``supports_cancel_running``, ...) skip on that capability,
never on a class name.

The tasks used here live at module level so that runners which ship calls
to other processes or machines can import them there. Side effects that
must be seen across processes go through files in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from pydantic import BaseModel

from taskyard import (
    allow_failure,
    as_completed,
    flow,
    get_run_context,
    quote,
    tags,
    task,
    unmapped,
    wait,
)
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.exceptions import (
    MappingLengthMismatch,
    MappingMissingIterable,
    RunnerNotStartedError,
    RunnerShutdownError,
    UpstreamTaskError,
)
from taskyard.runners.base import TaskRunner
from taskyard.states import StateType
from taskyard.testing.fidelity import TaskRunnerPrefectContract
from taskyard.testing.generator_contract import TaskRunnerGeneratorContract
from taskyard.testing.failures import TaskRunnerFailureContract
from taskyard.testing.hermetic import HermeticHome
from taskyard.testing.resource_contract import TaskRunnerResourceContract

__all__ = (
    "TaskRunnerContract",
    "TaskRunnerCoreContract",
    "TaskRunnerPolicyContract",
    "TaskRunnerPersistenceContract",
    "TaskRunnerPrefectContract",
    "TaskRunnerResourceContract",
    "TaskRunnerGeneratorContract",
    "TaskRunnerFailureContract",
    "ContractError",
)


class ContractError(Exception):
    """The exception the contract's failing tasks raise (picklable, distinct)."""


# -- tasks the contract runs --------------------------------------------------------


@task
def identity(x: Any) -> Any:
    return x


@task
def add(x: Any, y: Any) -> Any:
    return x + y


@task
def add_n_to_items(items: list[int], n: int) -> list[int]:
    return [item + n for item in items]


@task
def display(prefix: str, value: Any) -> str:
    return f"{prefix}{value}"


@task
def fail(message: str = "boom") -> None:
    raise ContractError(message)


@task
def touch(path: str, delay: float = 0.0) -> str:
    time.sleep(delay)
    Path(path).write_text("done")
    return path


@task
def exists(path: str) -> bool:
    return os.path.exists(path)


@task
def total(values: Any) -> int:
    return sum(values)


@task
def describe(value: Any) -> str:
    return type(value).__name__ + ":" + repr(value)


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


@task
def context_names() -> dict[str, Any]:
    ctx = get_run_context()
    assert ctx.task_run is not None and ctx.flow_run is not None
    return {
        "task_run_id": ctx.task_run.id,
        "task_run_name": ctx.task_run.name,
        "task_name": ctx.task_run.task_name,
        "tags": sorted(ctx.task_run.tags),
        "run_count": ctx.task_run.run_count,
        "flow_run_name": ctx.flow_run.name,
    }


@task
def sleepy(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).write_text("ran")


@dataclasses.dataclass
class Pair:
    left: Any
    right: Any


class Box(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    item: Any


# -- the contract -----------------------------------------------------------------------


class TaskRunnerCoreContract(HermeticHome):
    """Results, mapping, dependencies, failures, async, lifecycle."""

    @pytest.fixture
    def runner(self) -> TaskRunner[Any]:
        raise NotImplementedError("provide a `runner` fixture returning an unstarted runner")

    # results ----------------------------------------------------------------------

    def test_submit_returns_result(self, runner: TaskRunner[Any]) -> None:
        """A submitted run's future gives the task's return value."""

        @flow(task_runner=runner)
        def f() -> int:
            return int(add.submit(1, 2).result())

        assert f() == 3

    def test_map_returns_results_in_order(self, runner: TaskRunner[Any]) -> None:
        """map() gives one run per item, results in item order."""

        @flow(task_runner=runner)
        def f() -> list[int]:
            return add.map(list(range(50)), 1).result()

        assert f() == list(range(1, 51))

    def test_map_unmapped_broadcasts_an_iterable(self, runner: TaskRunner[Any]) -> None:
        """unmapped(list) goes whole to every run."""

        @flow(task_runner=runner)
        def f() -> list[list[int]]:
            return add_n_to_items.map(unmapped([10, 20]), n=[1, 2, 3]).result()

        assert f() == [[11, 21], [12, 22], [13, 23]]

    def test_map_broadcasts_strings(self, runner: TaskRunner[Any]) -> None:
        """A str argument is broadcast, not mapped over."""

        @flow(task_runner=runner)
        def f() -> list[str]:
            return display.map("Check it out: ", [1, 2, 3]).result()

        assert f() == ["Check it out: 1", "Check it out: 2", "Check it out: 3"]

    def test_map_over_futures_chains_runs(self, runner: TaskRunner[Any]) -> None:
        """Mapping over a list of futures makes each run depend on one future."""

        @flow(task_runner=runner)
        def f() -> list[int]:
            first = add.map([1, 2, 3], 10)
            return add.map(first, 100).result()

        assert f() == [111, 112, 113]

    def test_map_over_a_future_of_a_list(self, runner: TaskRunner[Any]) -> None:
        """A single future given to map is resolved and its result mapped over."""

        @flow(task_runner=runner)
        def f() -> list[int]:
            items = identity.submit([1, 2, 3])
            return add.map(items, 1).result()

        assert f() == [2, 3, 4]

    def test_map_of_mismatched_lengths_fails_before_running(self, runner: TaskRunner[Any]) -> None:
        """Iterables of unequal length raise, naming the arguments and lengths."""

        @flow(task_runner=runner)
        def f() -> None:
            add.map([1, 2, 3], [1, 2])

        with pytest.raises(MappingLengthMismatch, match=r"x=3, y=2"):
            f()

    def test_map_without_iterable_fails(self, runner: TaskRunner[Any]) -> None:
        """map() with nothing to map over raises MappingMissingIterable."""

        @flow(task_runner=runner)
        def f() -> None:
            add.map(1, 2)

        with pytest.raises(MappingMissingIterable):
            f()

    def test_futures_nested_in_arguments_are_resolved(self, runner: TaskRunner[Any]) -> None:
        """Futures inside lists, tuples, sets, dicts, dataclasses and models become results."""

        @flow(task_runner=runner)
        def f() -> list[str]:
            one, two = identity.submit(1), identity.submit(2)
            values = [
                [one, [two]],
                (one, two),
                {one},
                {"k": two, "nested": {"deep": [one]}},
                Pair(one, two),
                Box(item=two),
            ]
            return [describe.submit(v).result() for v in values]

        assert f() == [
            "list:[1, [2]]",
            "tuple:(1, 2)",
            "set:{1}",
            "dict:{'k': 2, 'nested': {'deep': [1]}}",
            "Pair:Pair(left=1, right=2)",
            "Box:Box(item=2)",
        ]

    def test_quote_passes_the_value_unopened(self, runner: TaskRunner[Any]) -> None:
        """quote(x) hands x to the task as it is, without inspecting it."""

        @flow(task_runner=runner)
        def f() -> str:
            return describe.submit(quote([1, 2])).result()

        assert f() == "list:[1, 2]"

    def test_chain_of_dependent_runs(self, runner: TaskRunner[Any]) -> None:
        """A chain where each run takes the previous future completes in order."""

        @flow(task_runner=runner)
        def f() -> int:
            future = identity.submit(0)
            for _ in range(100):
                future = add.submit(future, 1)
            return int(future.result())

        assert f() == 100

    def test_fan_in(self, runner: TaskRunner[Any]) -> None:
        """A reduce over a list of mapped futures sees every result."""

        @flow(task_runner=runner)
        def f() -> int:
            return total.submit(add.map(range(20), 1)).result()

        assert f() == sum(range(1, 21))

    def test_wait_for_orders_runs(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A run given wait_for starts only after those runs finished."""
        marker = str(tmp_path / "first")

        @flow(task_runner=runner)
        def f() -> list[bool]:
            first = touch.submit(marker, delay=0.3)
            return exists.map([marker, marker], wait_for=[first]).result()

        assert f() == [True, True]

    def test_return_state(self, runner: TaskRunner[Any]) -> None:
        """A flow called with return_state=True returns its final State."""

        @flow(task_runner=runner)
        def f() -> int:
            return int(add.submit(2, 2).result())

        state = f(return_state=True)
        assert state.is_completed() and state.result() == 4

    # failures -----------------------------------------------------------------------

    def test_failed_run_reraises_the_original_exception(self, runner: TaskRunner[Any]) -> None:
        """result() of a failed run raises the task's own exception type and message."""

        @flow(task_runner=runner)
        def f() -> Any:
            future = fail.submit("original")
            future.wait()
            assert future.state.is_failed()
            return future.result(raise_on_failure=False)

        error = f()
        assert isinstance(error, ContractError) and str(error) == "original"

    def test_downstream_of_a_failure_is_not_ready(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A run whose upstream failed never starts and ends Failed/NotReady naming it."""
        marker = tmp_path / "ran"

        seen: list[Any] = []

        @flow(task_runner=runner)
        def f() -> None:
            upstream = fail.submit()
            downstream = touch.submit(str(marker), wait_for=[upstream])
            downstream.wait()
            seen.extend([upstream.task_run_name, downstream.state])

        f()
        upstream_name, state = seen
        assert state.type is StateType.FAILED and state.name == "NotReady"
        assert upstream_name in (state.message or "")
        with pytest.raises(UpstreamTaskError, match=upstream_name):
            state.result()
        assert not marker.exists()

    def test_allow_failure_runs_with_the_exception(self, runner: TaskRunner[Any]) -> None:
        """allow_failure(upstream) lets the run start; it receives the exception."""

        @flow(task_runner=runner)
        def f() -> str:
            return describe.submit(allow_failure(fail.submit("tolerated"))).result()

        assert f() == "ContractError:ContractError('tolerated')"

    def test_flow_returning_a_failed_future_fails(self, runner: TaskRunner[Any]) -> None:
        """A flow whose return value holds a failed run ends Failed with that error."""

        @flow(task_runner=runner)
        def f() -> Any:
            return [identity.submit(1), fail.submit("returned")]

        state = f(return_state=True)
        assert state.is_failed()
        with pytest.raises(ContractError, match="returned"):
            state.result()

    def test_flow_raising_fails(self, runner: TaskRunner[Any]) -> None:
        """A flow whose body raises ends Failed and re-raises when called plainly."""

        @flow(task_runner=runner)
        def f() -> None:
            identity.submit(1)
            raise ContractError("in the body")

        assert f(return_state=True).is_failed()
        with pytest.raises(ContractError, match="in the body"):
            f()

    def test_unreturned_futures_are_waited_on(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """Every submitted run finishes before the flow run returns."""
        marker = tmp_path / "late"

        @flow(task_runner=runner)
        def f() -> None:
            touch.submit(str(marker), delay=0.3)

        f()
        assert marker.exists()

    # async ----------------------------------------------------------------------------

    def test_async_task_in_a_sync_flow(self, runner: TaskRunner[Any]) -> None:
        """An async task submitted from a sync flow runs and gives its result."""

        @flow(task_runner=runner)
        def f() -> list[int]:
            return async_double.map([1, 2, 3]).result()

        assert f() == [2, 4, 6]

    def test_async_flow_awaits_futures(self, runner: TaskRunner[Any]) -> None:
        """In an async flow, futures are awaitable and async tasks can be awaited directly."""

        @flow(task_runner=runner)
        async def f() -> list[int]:
            submitted = await async_double.submit(5)
            direct = await async_double(6)
            mapped = [await fut for fut in add.map([1, 2], 1)]
            return [submitted, direct, *mapped]

        assert asyncio.run(f()) == [10, 12, 2, 3]

    # futures ------------------------------------------------------------------------------

    def test_wait_and_as_completed(self, runner: TaskRunner[Any]) -> None:
        """taskyard.wait and as_completed accept the runner's futures."""

        @flow(task_runner=runner)
        def f() -> tuple[int, list[int]]:
            futures = add.map(range(10), 0)
            done, not_done = wait(futures)
            return len(done) + len(not_done) * 100, sorted(fut.result() for fut in as_completed(futures))

        assert f() == (10, list(range(10)))

    def test_done_callbacks_fire(self, runner: TaskRunner[Any]) -> None:
        """add_done_callback calls back once the run is done (at once if it is)."""
        seen: list[str] = []

        @flow(task_runner=runner)
        def f() -> None:
            future = identity.submit(1)
            future.add_done_callback(lambda fut: seen.append(fut.task_run_id))
            future.wait()
            future.add_done_callback(lambda fut: seen.append("late"))

        f()
        assert len(seen) == 2 and seen[1] == "late"

    # context ------------------------------------------------------------------------------

    def test_run_context_inside_a_task(self, runner: TaskRunner[Any]) -> None:
        """get_run_context() in a task names its task run and flow run; tags apply."""

        @flow(task_runner=runner, flow_run_name="ctx-{n}")
        def f(n: int) -> tuple[str, dict[str, Any]]:
            with tags("contract"):
                future = context_names.submit()
            return future.task_run_id, future.result()

        run_id, seen = f(7)
        assert seen["task_run_id"] == run_id
        assert seen["task_name"] == "context_names" and seen["task_run_name"].startswith("context_names-")
        assert seen["flow_run_name"] == "ctx-7"
        assert seen["tags"] == ["contract"] and seen["run_count"] == 1

    # lifecycle ----------------------------------------------------------------------------

    def test_runner_reused_across_flow_runs(self, runner: TaskRunner[Any]) -> None:
        """One runner given to a flow serves many runs; each run gets a duplicate."""

        @flow(task_runner=runner)
        def f(x: int) -> int:
            return int(add.submit(x, 1).result())

        assert [f(1), f(2)] == [2, 3]
        assert not runner.started

    def test_subflow_gets_its_own_runner(self, runner: TaskRunner[Any]) -> None:
        """A flow called in a flow runs as a child run on a fresh copy of its runner."""

        @flow(task_runner=runner)
        def child(x: Any) -> int:
            return int(add.submit(x, 1).result())

        @flow(task_runner=runner)
        def parent() -> list[int]:
            first = identity.submit(1)
            return [child(first), child(10)]

        assert parent() == [2, 11]

    def test_duplicate_is_fresh_and_equal(self, runner: TaskRunner[Any]) -> None:
        """duplicate() gives an unstarted runner with the same settings."""
        copy = runner.duplicate()
        assert copy == runner and copy is not runner and not copy.started

    def test_submit_before_start_and_after_shutdown_raise(self, runner: TaskRunner[Any]) -> None:
        """Lifecycle misuse raises named errors; a second shutdown does nothing."""
        call = _call(identity, x=1)
        with pytest.raises(RunnerNotStartedError):
            runner.submit(call)
        with runner:
            assert runner.submit(call).result(timeout=60) == 1
        with pytest.raises(RunnerShutdownError):
            runner.submit(call)
        runner.shutdown()
        runner.shutdown(wait=False, cancel_pending=True)

    def test_runner_map_keeps_order(self, runner: TaskRunner[Any]) -> None:
        """runner.map(calls) returns one future per call, in order."""
        with runner:
            futures = runner.map([_call(add, x=i, y=i) for i in range(20)])
            assert [fut.result(timeout=60) for fut in futures] == [2 * i for i in range(20)]

    def test_task_call_pickles_and_runs(self, runner: TaskRunner[Any]) -> None:
        """A TaskCall survives cloudpickle and runs to a Completed state."""
        call = cloudpickle.loads(cloudpickle.dumps(_call(add, x=2, y=3)))
        state = call.run()
        assert state.is_completed() and state.result() == 5
        assert pickle.loads(pickle.dumps(state)).result() == 5

    def test_unpicklable_argument_fails_naming_it(self, runner: TaskRunner[Any]) -> None:
        """On a runner that ships calls elsewhere, an unpicklable argument fails that run, naming it."""
        if not runner.requires_pickling:
            pytest.skip("the runner does not pickle calls: any argument works")
        import threading

        from taskyard.exceptions import UnpicklableArgumentError

        @flow(task_runner=runner)
        def f() -> list[Any]:
            bad = describe.submit(threading.Lock())
            good = identity.submit(1)
            return [bad.result(raise_on_failure=False), good.result()]

        error, good = f()
        assert isinstance(error, UnpicklableArgumentError) and "'value'" in str(error)
        assert good == 1

    def test_outstanding_work_is_cancelled_when_the_flow_fails(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """When the flow body raises, runs not yet started end Cancelled and never run."""
        if not runner.concurrent:
            pytest.skip("the runner runs each call at submission: nothing is ever pending")
        count = 40

        @flow(task_runner=runner)
        def f() -> list[Any]:
            futures = sleepy.map([0.2] * count, [str(tmp_path / f"m{i}") for i in range(count)])
            _stash.extend(futures)
            raise ContractError("stop")

        _stash: list[Any] = []
        assert f(return_state=True).is_failed()
        wait(_stash, timeout=60)
        states = [fut.state for fut in _stash]
        assert all(s.is_final() for s in states)
        cancelled = [s for s in states if s.is_cancelled()]
        assert cancelled, "some runs should never have started"
        time.sleep(0.5)
        assert len(list(tmp_path.iterdir())) < count


def _call(t: Any, **params: Any) -> TaskCall[Any]:
    return TaskCall(t, params, TaskRunInfo(os.urandom(16).hex(), f"{t.name}-call", t.name))


# -- engine policies: the same on every runner ----------------------------------------------


@task(retries=3, retry_delay_seconds=[0.01, 0.02, 0.03])
def flaky(path: str, failures: int) -> int:
    marker = Path(path)
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts <= failures:
        raise ContractError(f"attempt {attempts}")
    run = get_run_context().task_run
    assert run is not None
    return run.run_count


def _only_value_errors(task: Any, task_run: Any, state: Any) -> bool:
    return isinstance(state.result(raise_on_failure=False), ValueError)


@task(retries=5, retry_condition_fn=_only_value_errors)
def fails_with(path: str, kind: str) -> None:
    with open(path, "a") as fh:
        fh.write("x")
    raise {"value": ValueError, "type": TypeError}[kind](kind)


@task(timeout_seconds=0.5)
def overruns(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@task(cache_key_fn=lambda ctx, params: f"contract-{params['key']}", persist_result=True)
def cached_count(key: str, path: str) -> int:
    with open(path, "a") as fh:
        fh.write("x")
    return len(Path(path).read_text())


def _write_hook(directory: Path, kind: str) -> Any:
    def hook(task: Any, task_run: Any, state: Any) -> None:
        Path(directory, f"hook-{kind}-{task.name}").write_text(state.name)

    return hook


def _raising_hook(task: Any, task_run: Any, state: Any) -> None:
    raise RuntimeError("hook failure must not change the state")


@task
def hooked(ok: bool) -> str:
    if not ok:
        raise ContractError("hooked failure")
    return "ok"


@task(task_run_name="named-{item}")
def named(item: int) -> str:
    return get_run_context().task_run.name  # type: ignore[union-attr]


@task
def logs_something(message: str) -> None:
    from taskyard import get_run_logger

    get_run_logger().warning(message)


@task(log_prints=True)
def prints_something(message: str) -> None:
    print(message)


@task(max_concurrency=2)
def interval(path: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{start} {time.time()}\n")


def _peak_overlap(lines: list[str]) -> int:
    events = []
    for line in lines:
        start, end = map(float, line.split())
        events += [(start, 1), (end, -1)]
    peak = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak


class TaskRunnerPolicyContract(HermeticHome):
    """Engine behaviours that must hold wherever the runner runs the task."""

    def test_retries_rerun_until_success(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A task failing twice with retries=3 completes on attempt 3; run_count says so."""

        @flow(task_runner=runner)
        def f() -> tuple[int, int]:
            future = flaky.submit(str(tmp_path / "attempts"), 2)
            return future.result(), future.state.run_count

        assert f() == (3, 3)

    def test_retries_exhausted_fail_with_the_last_error(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """After retries run out the run is Failed with the last attempt's exception."""

        @flow(task_runner=runner)
        def f() -> Any:
            future = flaky.submit(str(tmp_path / "attempts"), 10)
            return future.result(raise_on_failure=False), future.state.run_count

        error, run_count = f()
        assert isinstance(error, ContractError) and str(error) == "attempt 4" and run_count == 4

    def test_retry_condition_decides(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """retry_condition_fn(task, task_run, state) False stops retrying."""

        @flow(task_runner=runner)
        def f() -> None:
            fails_with.submit(str(tmp_path / "value"), "value").wait()
            fails_with.submit(str(tmp_path / "type"), "type").wait()

        f()
        assert len((tmp_path / "value").read_text()) == 6
        assert len((tmp_path / "type").read_text()) == 1

    def test_timeout_ends_timed_out_promptly(self, runner: TaskRunner[Any]) -> None:
        """A task over timeout_seconds ends Failed/TimedOut without waiting for the code."""

        @flow(task_runner=runner)
        def f() -> Any:
            future = overruns.submit(30)
            future.wait()
            return future.state.type, future.state.name, future.result(raise_on_failure=False)

        started = time.monotonic()
        state_type, name, error = f()
        assert (state_type, name) == (StateType.FAILED, "TimedOut")
        assert isinstance(error, TimeoutError)
        # The task sleeps 30 s; under 28 s means the flow did not wait for it, with room
        # for a cluster's start and stop on a loaded machine.
        assert time.monotonic() - started < 28, "the flow waited for the runaway task"

    def test_cache_hit_skips_the_function(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A second call with the same cache key ends Cached without running."""
        calls = str(tmp_path / "calls")

        @flow(task_runner=runner)
        def f() -> list[Any]:
            first = cached_count.submit("k1", calls)
            first.wait()
            second = cached_count.submit("k1", calls)
            other = cached_count.submit("k2", calls)
            return [first.result(), second.result(), second.state.name, other.result()]

        assert f() == [1, 1, "Cached", 2]

    def test_cache_is_shared_by_later_flow_runs(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """A later flow run (another runner instance) hits the cache the first one filled."""
        calls = str(tmp_path / "calls")

        @flow(task_runner=runner)
        def f() -> str:
            return _state_name(cached_count.submit("shared", calls))

        assert [f(), f()] == ["Completed", "Cached"]

    def test_hooks_are_called_and_a_raising_hook_is_harmless(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """on_completion/on_failure get (task, task_run, state); a hook raising changes nothing."""
        home = tmp_path
        with_hooks = hooked.with_options(
            on_completion=[_write_hook(home, "completion"), _raising_hook], on_failure=_write_hook(home, "failure")
        )

        @flow(task_runner=runner)
        def f() -> list[str]:
            good, bad = with_hooks.submit(True), with_hooks.submit(False)
            wait([good, bad])
            return [good.state.name, bad.state.name]

        assert f() == ["Completed", "Failed"]
        assert (home / "hook-completion-hooked").read_text() == "Completed"
        assert (home / "hook-failure-hooked").read_text() == "Failed"

    def test_task_run_name_templates(self, runner: TaskRunner[Any]) -> None:
        """task_run_name formats over the arguments; the task sees its name."""

        @flow(task_runner=runner)
        def f() -> list[str]:
            return named.map([1, 2]).result()

        assert f() == ["named-1", "named-2"]

    def test_logs_reach_the_flow_process(self, runner: TaskRunner[Any], caplog: pytest.LogCaptureFixture) -> None:
        """get_run_logger() records in a task reach the flow's log handlers once, naming their runs in extra fields."""

        @flow(task_runner=runner, flow_run_name="logging-flow")
        def f() -> None:
            logs_something.submit("hello from the task").wait()

        with caplog.at_level("INFO"):
            f()
        records = [r for r in caplog.records if "hello from the task" in r.getMessage()]
        assert [r.getMessage() for r in records] == ["hello from the task"]  # once, and the text as logged
        assert getattr(records[0], "flow_run_name", None) == "logging-flow"
        assert str(getattr(records[0], "task_run_name", "")).startswith("logs_something-")

    def test_log_prints_sends_print_to_the_logger(self, runner: TaskRunner[Any], caplog: pytest.LogCaptureFixture) -> None:
        """log_prints=True turns print() in the task into a log record."""

        @flow(task_runner=runner)
        def f() -> None:
            prints_something.submit("printed line").wait()

        with caplog.at_level("INFO"):
            f()
        assert [r.getMessage() for r in caplog.records if "printed line" in r.getMessage()] == ["printed line"]

    def test_max_concurrency_holds_runs_back(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """@task(max_concurrency=2) never has more than 2 runs executing at once."""
        log = tmp_path / "intervals"

        @flow(task_runner=runner)
        def f() -> None:
            interval.map([str(log)] * 8, 0.1).wait()

        f()
        lines = log.read_text().splitlines()
        assert len(lines) == 8 and _peak_overlap(lines) <= 2


@task(persist_result=True, result_serializer="json", result_storage_key="persisted-{name}")
def persisted(name: str) -> dict[str, str]:
    return {"name": name}


@task(tags=["limited"])
def tagged_interval(path: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{start} {time.time()}\n")


class TaskRunnerPersistenceContract(HermeticHome):
    """Results persisted and limits kept wherever the run happens."""

    def test_results_are_persisted_where_the_flow_says(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """persist_result writes a readable record in the flow's result storage, atomically named."""
        import json

        @flow(task_runner=runner, result_storage=str(tmp_path))
        def f() -> str:
            future = persisted.submit("x")
            future.wait()
            return str(future.state.result_location)

        location = f()
        assert location == str(tmp_path / "persisted-x")
        header, payload = Path(location).read_bytes().split(b"\n", 2)[1:]
        assert json.loads(header)["serializer"] == "json" and json.loads(payload) == {"name": "x"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["persisted-x"]

    def test_tag_concurrency_holds_tagged_runs_back(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """@flow(tag_concurrency={tag: 1}) runs tagged runs one at a time."""
        log = tmp_path / "intervals"

        @flow(task_runner=runner, tag_concurrency={"limited": 1})
        def f() -> None:
            tagged_interval.map([str(log)] * 4, 0.05).wait()

        f()
        lines = log.read_text().splitlines()
        assert len(lines) == 4 and _peak_overlap(lines) == 1


def _state_name(future: Any) -> str:
    future.wait()
    return str(future.state.name)


class TaskRunnerContract(
    TaskRunnerCoreContract,
    TaskRunnerPolicyContract,
    TaskRunnerPersistenceContract,
    TaskRunnerResourceContract,
    TaskRunnerPrefectContract,
    TaskRunnerGeneratorContract,
    TaskRunnerFailureContract,
):
    """The whole contract for a task runner; subclass and provide ``runner``.

    ``runner`` must return an unstarted runner; every flow run in the tests
    uses a duplicate of it.
    """

    @pytest.fixture
    def runner(self) -> TaskRunner[Any]:
        raise NotImplementedError("provide a `runner` fixture returning an unstarted runner")
