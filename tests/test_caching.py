"""Cache keys, policies, expiry, refresh, and unusable records."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, task, task_input_hash
from taskyard.caching import DEFAULT, FLOW_PARAMETERS, INPUTS, NONE, RUN_ID, TASK_SOURCE, CacheContext, stable_hash
from taskyard.context import TaskRunInfo


def _ctx(t: Any) -> CacheContext:
    return CacheContext(t, TaskRunInfo("id", "name", t.name), None)


@task
def plus_one(x: int) -> int:
    return x + 1


class TestStableHash:
    def test_same_value_same_hash_in_another_process(self) -> None:
        """stable_hash and task_input_hash give the same key in a fresh interpreter."""
        value = {"b": [1, 2.5, "x"], "a": {3, 4}, "c": (None, True)}
        here = task_input_hash(_ctx(plus_one), {"x": value})
        code = (
            "from taskyard.caching import task_input_hash, CacheContext\n"
            "from taskyard.context import TaskRunInfo\n"
            "from tests.test_caching import plus_one\n"
            f"print(task_input_hash(CacheContext(plus_one, TaskRunInfo('i', 'n', 'plus_one'), None), {{'x': {value!r}}}))"
        )
        root = Path(__file__).resolve().parent.parent
        there = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
        assert there.stdout.strip() == here

    def test_dict_order_does_not_matter_but_values_do(self) -> None:
        """Key order is ignored; any change of value changes the hash."""
        assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
        assert stable_hash({"a": 1}) != stable_hash({"a": 2})
        assert stable_hash(1) != stable_hash("1") != stable_hash(1.0)

    def test_changed_code_changes_the_key(self) -> None:
        """Two tasks of the same name with different code get different keys."""

        @task(name="same")
        def one(x: int) -> int:
            return x + 1

        @task(name="same")
        def two(x: int) -> int:
            return x + 2

        assert task_input_hash(_ctx(one), {"x": 1}) != task_input_hash(_ctx(two), {"x": 1})


class TestPolicies:
    def test_combination_and_none(self) -> None:
        """Policies combine with +; NONE absorbs; DEFAULT includes the run id."""
        assert repr(INPUTS + TASK_SOURCE) == "INPUTS + TASK_SOURCE"
        assert (INPUTS + NONE) is NONE and NONE.compute_key(_ctx(plus_one), {}) is None
        assert repr(DEFAULT) == "INPUTS + TASK_SOURCE + RUN_ID"
        assert INPUTS.compute_key(_ctx(plus_one), {"x": 1}) != INPUTS.compute_key(_ctx(plus_one), {"x": 2})

    def test_run_id_policy_caches_within_a_flow_run_only(self, tmp_path: Path) -> None:
        """RUN_ID + INPUTS hits inside one flow run and misses in the next."""
        calls = tmp_path / "calls"

        @task(cache_policy=INPUTS + RUN_ID)
        def count(x: int) -> int:
            with calls.open("a") as fh:
                fh.write("x")
            return x

        @flow
        def f() -> list[str]:
            first = count.submit(1)
            first.wait()
            second = count.submit(1)
            second.wait()
            return [first.state.name, second.state.name]

        assert f() == ["Completed", "Cached"]
        assert f() == ["Completed", "Cached"]
        assert calls.read_text() == "xx"

    def test_flow_parameters_policy(self, tmp_path: Path) -> None:
        """FLOW_PARAMETERS keys on the flow run's parameters."""

        @task(cache_policy=FLOW_PARAMETERS)
        def stamp() -> float:
            return time.time()

        @flow
        def f(day: str) -> float:
            return stamp.submit().result()

        assert f("mon") == f("mon") != f("tue")

    def test_bad_policy_type_fails_at_decoration(self) -> None:
        """cache_policy must be a CachePolicy."""
        with pytest.raises(TypeError, match="cache_policy"):
            task(cache_policy="INPUTS")(lambda: None)


class TestLookup:
    def test_expired_records_are_misses(self, tmp_path: Path) -> None:
        """A record older than cache_expiration is ignored and the task runs."""
        calls = tmp_path / "calls"

        @task(cache_key_fn=lambda c, p: "expiring", cache_expiration=timedelta(seconds=0.3))
        def count() -> int:
            with calls.open("a") as fh:
                fh.write("x")
            return len(calls.read_text())

        assert count() == 1
        assert count(return_state=True).name == "Cached"
        time.sleep(0.4)
        assert count() == 2

    def test_refresh_cache_runs_and_overwrites(self, tmp_path: Path) -> None:
        """refresh_cache=True runs the task even on a hit and stores the new value."""
        values = iter([1, 2])

        @task(cache_key_fn=lambda c, p: "refresh")
        def value() -> int:
            return next(values)

        assert value() == 1
        assert value.with_options(refresh_cache=True)() == 2
        assert value() == 2

    def test_raising_key_function_fails_the_run_naming_the_option(self) -> None:
        """A cache_key_fn that raises ends the run Failed; the function does not run."""
        ran = []

        def broken_key(context: Any, parameters: Any) -> str:
            raise KeyError("no key")

        @task(cache_key_fn=broken_key)
        def work() -> None:
            ran.append(1)

        state = work(return_state=True)
        assert state.is_failed() and "cache_key_fn" in (state.message or "") and ran == []

    def test_corrupt_record_is_a_miss_never_a_wrong_value(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A damaged or half-written record makes the task run again, with a warning."""
        storage = tmp_path / "store"

        @task(cache_key_fn=lambda c, p: "damaged", result_storage=str(storage))
        def value() -> str:
            return "fresh"

        assert value() == "fresh"
        record = storage / "cache" / "damaged"
        data = record.read_bytes()
        record.write_bytes(data[:-3] + b"xyz")  # same length, wrong checksum
        assert value(return_state=True).name == "Completed"
        record.write_bytes(data[: len(data) // 2])  # truncated, as if killed mid-write
        assert value(return_state=True).name == "Completed"
        assert any("unusable" in r.getMessage() for r in caplog.records)
        assert value(return_state=True).name == "Cached"

    def test_direct_calls_share_the_cache_with_flow_runs(self) -> None:
        """A task called outside a flow and one submitted in a flow share records."""

        @task(cache_key_fn=task_input_hash)
        def slow(x: int) -> int:
            return x * 3

        assert slow(2) == 6

        @flow
        def f() -> str:
            fut = slow.submit(2)
            fut.wait()
            return fut.state.name

        assert f() == "Cached"


class TestLargeFlowParameters:
    def test_large_parameters_do_not_travel_with_every_call(self) -> None:
        """A shipped task call carries a hash of large flow parameters, not a copy."""
        import pickle

        import cloudpickle

        from taskyard.context import FlowRunInfo
        from taskyard.engine import TaskCall

        big = list(range(200_000))
        info = FlowRunInfo("f" * 32, "flow", "flow", parameters={"data": big})
        call = TaskCall(plus_one, {"x": 1}, TaskRunInfo("t", "t", "plus_one"), info)
        data = cloudpickle.dumps(call)
        assert len(data) < 2_000
        shipped = pickle.loads(data).flow_run
        assert shipped.parameters == {} and shipped.parameters_key() == info.parameters_key()
        assert info.parameters["data"] is big  # the flow process keeps them

    def test_flow_parameters_policy_on_a_process_worker(self, tmp_path: Path) -> None:
        """FLOW_PARAMETERS keys on large parameters on workers too: same data hits, other data misses."""
        from taskyard.runners import ProcessPoolTaskRunner

        @task(cache_policy=FLOW_PARAMETERS)
        def stamp() -> float:
            return time.time()

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def f(data: list[int]) -> float:
            return stamp.submit().result()

        big = list(range(100_000))
        assert f(big) == f(list(big)) != f(big + [1])
