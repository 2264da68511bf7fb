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
from taskyard.testing.batching_contract import TaskRunnerBatchingContract
from taskyard.testing.fidelity import TaskRunnerPrefectContract
from taskyard.testing.generator_contract import TaskRunnerGeneratorContract
from taskyard.testing.failures import TaskRunnerFailureContract
from taskyard.testing.errors import ContractError
from taskyard.testing.hermetic import HermeticHome
from taskyard.testing.policy_contract import TaskRunnerPersistenceContract, TaskRunnerPolicyContract
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
    "TaskRunnerBatchingContract",
    "ContractError",
)


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


class TaskRunnerContract(
    TaskRunnerCoreContract,
    TaskRunnerPolicyContract,
    TaskRunnerPersistenceContract,
    TaskRunnerResourceContract,
    TaskRunnerPrefectContract,
    TaskRunnerGeneratorContract,
    TaskRunnerFailureContract,
    TaskRunnerBatchingContract,
):
    """The whole contract for a task runner; subclass and provide ``runner``.

    ``runner`` must return an unstarted runner; every flow run in the tests
    uses a duplicate of it.
    """

    @pytest.fixture
    def runner(self) -> TaskRunner[Any]:
        raise NotImplementedError("provide a `runner` fixture returning an unstarted runner")
