"""Behaviours found by adversarial review: each once failed, hung or leaked."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest

from taskyard import allow_failure, flow, get_run_context, task, wait
from taskyard.exceptions import MissingContextError, NoActiveFlowError, ParameterValidationError
from taskyard.runners import ProcessPoolTaskRunner


class CustomInit(Exception):
    """An exception whose pickle cannot be loaded (its __init__ needs two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


class BadLoad:
    """An argument that pickles but cannot be rebuilt in a worker."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot rebuild in the worker")


@task
def raise_custom_at(i: int) -> int:
    if i == 5:
        raise CustomInit(1, 2)
    return i


@task
def one(x: Any) -> int:
    return 1


@task
def die_at(i: int) -> int:
    if i == 3:
        os._exit(1)
    return i


@task(timeout_seconds=0.002)
def near_deadline(i: int) -> int:
    started = time.perf_counter()
    while time.perf_counter() - started < 0.0019 + (i % 20) * 1e-5:
        pass
    return i


@task(timeout_seconds=0.3)
def swallows_the_alarm() -> str:
    try:
        time.sleep(1)
    except BaseException:
        pass
    return "finished"


@task
def exits() -> None:
    sys.exit(3)


class TestProcessRunnerIsolation:
    def test_an_outcome_that_cannot_be_unpickled_fails_alone(self) -> None:
        """An exception that does not unpickle in the flow process fails its run; the batch completes."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> tuple[Counter[str], str]:
            futures = raise_custom_at.map(range(200))
            futures.wait(60)
            return Counter(x.state.name for x in futures), str(futures[5].result(raise_on_failure=False))

        counts, message = f()
        assert counts == Counter({"Completed": 199, "Failed": 1}) and "cannot be sent back" in message

    def test_an_argument_that_cannot_be_unpickled_fails_alone(self) -> None:
        """An argument that breaks in the worker fails that run (not Crashed); the others complete."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> Counter[str]:
            items: list[Any] = list(range(100))
            items[5] = BadLoad()
            futures = one.map(items)
            futures.wait(60)
            return Counter(x.state.name for x in futures)

        assert f() == Counter({"Completed": 99, "Failed": 1})

    @pytest.mark.parametrize("workers", [1, 2])
    def test_only_the_run_that_kills_its_worker_crashes(self, workers: int) -> None:
        """Runs lost beside a crashing one run again; only the culprit ends Crashed."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=workers))
        def f() -> tuple[Counter[str], str]:
            futures = die_at.map(range(60))
            futures.wait(60)
            return Counter(x.state.name for x in futures), futures[3].state.name

        assert f() == (Counter({"Completed": 59, "Crashed": 1}), "Crashed")

    def test_alarms_at_the_deadline_never_crash_a_batch(self) -> None:
        """Runs finishing right at their time limit end TimedOut or Completed, never Crashed."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> set[str]:
            futures = near_deadline.map(range(1500))
            futures.wait(60)
            return {x.state.name for x in futures}

        assert f() <= {"TimedOut", "Completed"}

    @pytest.mark.parametrize("runner", ["threads", "processes"])
    def test_swallowed_alarm_and_sys_exit_end_as_states(self, runner: str) -> None:
        """Code that swallows the time limit ends TimedOut; sys.exit() fails only its task."""

        @flow(task_runner=runner)
        def f() -> tuple[str, str, str]:
            late, exited = swallows_the_alarm.submit(), exits.submit()
            wait([late, exited], timeout=30)
            return late.state.name, exited.state.name, repr(exited.result(raise_on_failure=False))

        assert f() == ("TimedOut", "Failed", "SystemExit(3)")


class TestConcurrencyLimitsAtScale:
    def test_a_thousand_queued_calls_that_fail_at_once(self) -> None:
        """Queued limited calls that end immediately do not recurse: each ends Failed, none is left Pending."""

        @task(max_concurrency=1)
        def slow(x: Any) -> int:
            time.sleep(0.2)
            return 1

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def f() -> Counter[str]:
            futures = slow.map([0] + [threading.Lock() for _ in range(1000)])
            futures.wait(60)
            return Counter(x.state.name for x in futures)

        assert f() == Counter({"Failed": 1000, "Completed": 1})

    @pytest.mark.parametrize("runner", ["threads", "processes"])
    def test_cancelling_a_limited_map_cancels_every_run(self, runner: str) -> None:
        """When the flow fails, every queued limited run ends Cancelled."""
        stash: list[Any] = []

        @task(max_concurrency=1)
        def slow(x: int) -> int:
            time.sleep(2)  # still running when the flow raises, even on a loaded machine
            return x

        @flow(task_runner=runner)
        def f() -> None:
            stash.extend(slow.map(range(2000)))
            raise RuntimeError("stop")

        assert f(return_state=True).is_failed()
        _, not_done = wait(stash, timeout=60)
        assert not not_done and {x.state.name for x in stash} == {"Cancelled"}


class TestStatesAsArguments:
    def test_a_failed_state_argument_makes_the_run_not_ready(self) -> None:
        """A failed State given as an argument blocks the run like a failed future (unless allowed)."""

        @task
        def boom() -> None:
            raise ValueError("boom")

        @task
        def show(value: Any) -> str:
            return repr(value)

        @flow
        def f() -> tuple[str, list[str], str]:
            failed = boom(return_state=True)
            single = show.submit(failed)
            mapped = show.map([failed, failed])
            single.wait()
            mapped.wait()
            return single.state.name, [m.state.name for m in mapped], show.submit(allow_failure(failed)).result()

        assert f() == ("NotReady", ["NotReady", "NotReady"], "ValueError('boom')")


class TestAsyncInSyncRuns:
    def test_async_tasks_and_flows_called_in_sync_runs_give_results(self) -> None:
        """Inside a sync flow or task, calling an async task or flow runs it and returns its result."""

        @task
        async def square(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * x

        @flow
        async def async_child(x: int) -> int:
            return await square(x) + 1

        @task
        def sync_task(x: int) -> int:
            return square(x)  # type: ignore[return-value]

        @flow
        def parent() -> tuple[Any, ...]:
            return square(3), async_child(2), sync_task.submit(4).result()

        assert parent() == (9, 5, 16)

    def test_outside_a_run_an_async_task_is_awaitable(self) -> None:
        """Outside any run, an async task call is a coroutine for asyncio.run."""

        @task
        async def double(x: int) -> int:
            return 2 * x

        assert asyncio.run(double(4)) == 8

    def test_a_cancelled_async_flow_leaves_no_run_context(self) -> None:
        """After an async flow is cancelled, the caller is outside any run again."""

        @flow
        async def sleepy() -> None:
            await asyncio.sleep(10)

        @task
        def quick() -> int:
            return 1

        async def main() -> list[str]:
            try:
                async with asyncio.timeout(0.3):
                    await sleepy()
            except TimeoutError:
                pass
            seen = []
            try:
                get_run_context()
            except MissingContextError:
                seen.append("no context")
            try:
                quick.submit()
            except NoActiveFlowError:
                seen.append("no flow")
            return seen

        assert asyncio.run(main()) == ["no context", "no flow"]


class TestSmallerFixes:
    def test_parameters_with_leading_underscores_are_validated(self) -> None:
        """A flow parameter named `_x` is validated and coerced like any other."""

        @flow
        def f(_private: int) -> int:
            return _private

        assert f("3") == 3
        with pytest.raises(ParameterValidationError, match="'_private'"):
            f("abc")

    def test_a_returned_future_list_resolves_to_a_plain_list_of_states(self) -> None:
        """A flow returning task.map(...) returns a plain list of the runs' final States."""

        @task
        def ident(x: int) -> int:
            return x

        @flow
        def f() -> Any:
            return ident.map([1, 2])

        result = f()
        assert type(result) is list and [s.result() for s in result] == [1, 2]

    def test_a_run_name_template_that_does_not_fit_says_so(self) -> None:
        """A template that cannot be applied (open-ended signature) fails clearly at submit."""

        @task(task_run_name="{missing}")
        def varargs(*args: int) -> tuple[int, ...]:
            return args

        @flow
        def f() -> None:
            varargs.submit(1)

        with pytest.raises(ValueError, match=r"run-name template '\{missing\}' does not fit"):
            f()


class TestRecordsAndSerializers:
    def test_a_shared_storage_key_never_serves_another_inputs_value(self, tmp_path: Any) -> None:
        """With result_storage_key, a record written for one cache key is a miss for another."""

        @task(cache_key_fn=lambda c, p: f"k{p['x']}", result_storage_key="fixed", result_storage=str(tmp_path))
        def keyed(x: int) -> int:
            return x * 10

        assert keyed(1) == 10
        assert keyed(2, return_state=True).name == "Completed" and keyed(2) == 20

    def test_json_refuses_values_it_would_change(self, tmp_path: Any) -> None:
        """The json serializer fails a run whose result would come back different."""

        @task(persist_result=True, result_serializer="json", result_storage=str(tmp_path))
        def tuple_keys() -> dict[int, tuple[int, int]]:
            return {1: (2, 3)}

        state = tuple_keys(return_state=True)
        assert state.is_failed() and "JSON round trip" in (state.message or "")

    def test_a_damaged_header_is_a_miss(self, tmp_path: Any) -> None:
        """A record whose header has a bad field is a cache miss, not a crash."""
        import json as _json

        @task(cache_key_fn=lambda c, p: "hdr", result_storage=str(tmp_path))
        def value() -> str:
            return "fresh"

        value()
        record = tmp_path / "cache" / "hdr"
        magic, header, payload = record.read_bytes().split(b"\n", 2)
        broken = _json.loads(header) | {"expires_at": "soon"}
        record.write_bytes(magic + b"\n" + _json.dumps(broken).encode() + b"\n" + payload)
        assert value(return_state=True).name == "Completed"


def test_states_as_arguments_on_a_dependency_resolving_runner() -> None:
    """States given to a runner that resolves dependencies itself are judged in the flow process."""
    from taskyard.runners.base import TaskRunner

    from taskyard.runners.threads import ThreadPoolTaskRunner as _Threads

    class Resolving(_Threads):
        resolves_dependencies = True  # gets calls with pending upstreams, like Dask

        def submit(self, call: Any) -> Any:
            from taskyard.inputs import resolve

            futures = [u.future for u in call.upstreams]
            assert all(not isinstance(f, __import__("taskyard").State) for f in futures)
            wait(futures)
            call.parameters = resolve(call.parameters)
            call.upstreams = ()
            return super().submit(call)

    @task
    def good() -> int:
        return 1

    @task
    def bad() -> None:
        raise ValueError("boom")

    @task
    def show(value: Any) -> str:
        return repr(value)

    @flow(task_runner=Resolving(max_workers=2))
    def f() -> tuple[str, str]:
        ok = show.submit(good(return_state=True))
        blocked = show.submit([1, {"k": [bad(return_state=True)]}])
        blocked.wait()
        return ok.result(), blocked.state.name

    assert f() == ("1", "NotReady")
    assert issubclass(Resolving, TaskRunner)
