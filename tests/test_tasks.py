"""Task decoration, calling, submitting and mapping."""

from __future__ import annotations

import asyncio

import pytest

from taskyard import flow, task
from taskyard.exceptions import (
    MappingLengthMismatch,
    MappingMissingIterable,
    NoActiveFlowError,
    ReservedArgumentError,
)


@task
def double(x: int) -> int:
    return 2 * x


class TestDecoration:
    def test_bare_and_with_options(self) -> None:
        """@task and @task(...) both make a Task carrying its options."""

        @task(name="renamed", tags=["a"], retries=2)
        def f() -> None: ...

        assert double.name == "double" and f.name == "renamed"
        assert f.tags == frozenset({"a"}) and f.retries == 2

    def test_wait_for_parameter_is_rejected_at_decoration(self) -> None:
        """A task parameter named wait_for fails when decorated, naming it."""
        with pytest.raises(ReservedArgumentError, match="wait_for"):

            @task
            def bad(wait_for: int) -> None: ...

    def test_unknown_option_is_rejected(self) -> None:
        """An unknown option name is a TypeError listing the known ones."""
        with pytest.raises(TypeError, match="unknown task option.*retires"):
            task(retires=3)(lambda: None)

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"retries": -1}, "retries"),
            ({"retry_delay_seconds": -1}, "retry_delay_seconds"),
            ({"retry_delay_seconds": [1, -2]}, "retry_delay_seconds"),
            ({"timeout_seconds": 0}, "timeout_seconds"),
            ({"max_concurrency": 0}, "max_concurrency"),
            ({"task_run_name": "run-{missing}"}, "missing"),
            ({"on_failure": [1]}, "on_failure"),
        ],
    )
    def test_bad_option_values_fail_at_decoration(self, options: dict[str, object], match: str) -> None:
        """Bad option values fail when the task is defined, naming the option."""
        with pytest.raises((ValueError, TypeError), match=match):

            @task(**options)
            def f(x: int = 1) -> int:
                return x

    def test_with_options_copies(self) -> None:
        """with_options returns a changed copy and leaves the original alone."""
        changed = double.with_options(name="twice", retries=1)
        assert changed.name == "twice" and changed.retries == 1
        assert double.name == "double" and double.retries == 0
        assert changed(4) == 8


class TestCallingDirectly:
    def test_outside_a_flow_runs_here(self) -> None:
        """Calling a task outside a flow runs it and returns its result."""
        assert double(21) == 42

    def test_return_state(self) -> None:
        """return_state=True returns the final State, not the result."""
        state = double(1, return_state=True)
        assert state.is_completed() and state.result() == 2

    def test_failure_raises_the_original_exception(self) -> None:
        """A failing direct call raises the task's own exception."""

        @task
        def boom() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            boom()

    def test_async_task_outside_a_flow(self) -> None:
        """An async task called directly returns an awaitable."""

        @task
        async def add_one(x: int) -> int:
            return x + 1

        assert asyncio.run(add_one(1)) == 2

    def test_wrong_arguments_raise_type_error(self) -> None:
        """Arguments that do not fit the signature raise TypeError naming the task."""
        with pytest.raises(TypeError, match="double"):
            double(1, 2)
        with pytest.raises(TypeError, match="unexpected keyword argument 'y'"):
            double(y=1)
        with pytest.raises(TypeError, match="missing required"):
            double()

    def test_inside_a_flow_resolves_futures(self) -> None:
        """A direct call in a flow waits for futures in its arguments."""

        @flow
        def f() -> int:
            return double(double.submit(2))

        assert f() == 8


class TestSubmitAndMapOutsideAFlow:
    def test_submit_outside_a_flow_says_what_to_do(self) -> None:
        """submit() outside a flow raises NoActiveFlowError with the alternative."""
        with pytest.raises(NoActiveFlowError, match=r"inside a @flow.*double\(\.\.\.\)"):
            double.submit(1)

    def test_map_outside_a_flow(self) -> None:
        """map() outside a flow raises NoActiveFlowError too."""
        with pytest.raises(NoActiveFlowError):
            double.map([1, 2])


class TestMapErrors:
    def test_length_mismatch_names_arguments_and_lengths(self) -> None:
        """Unequal iterables name each argument with its length."""

        @task
        def add(a: int, b: int) -> int:
            return a + b

        @flow
        def f() -> None:
            add.map([1, 2, 3], b=[1])

        with pytest.raises(MappingLengthMismatch, match=r"a=3, b=1.*unmapped"):
            f()

    def test_nothing_to_map(self) -> None:
        """map() over no iterable suggests submit()."""

        @flow
        def f() -> None:
            double.map(3)

        with pytest.raises(MappingMissingIterable, match="submit"):
            f()

    def test_generators_and_ranges_are_mapped(self) -> None:
        """Any iterable (generator, range, tuple) is mapped; dicts are broadcast."""

        @task
        def pick(d: dict[str, int], k: str) -> int:
            return d[k]

        @flow
        def f() -> tuple[list[int], list[int], list[int]]:
            return (
                double.map(x for x in range(3)).result(),
                double.map(range(3)).result(),
                pick.map({"a": 1, "b": 2}, ["a", "b"]).result(),
            )

        assert f() == ([0, 2, 4], [0, 2, 4], [1, 2])


class TestSignatures:
    def test_positional_only_and_var_args(self) -> None:
        """Tasks with positional-only, *args and **kwargs parameters bind and run."""

        @task
        def collect(a: int, /, b: int = 2, *rest: int, c: int = 3, **extra: int) -> tuple[object, ...]:
            return (a, b, rest, c, extra)

        @flow
        def f() -> list[object]:
            return [
                collect.submit(1).result(),
                collect.submit(1, 5, 6, 7, c=8, z=9).result(),
                collect.map([1, 2], c=0).result(),
            ]

        assert f() == [
            (1, 2, (), 3, {}),
            (1, 5, (6, 7), 8, {"z": 9}),
            [(1, 2, (), 0, {}), (2, 2, (), 0, {})],
        ]

    def test_task_run_name_template(self) -> None:
        """task_run_name formats over the call's arguments, defaults included."""

        @task(task_run_name="scale-{x}-by-{factor}")
        def scale(x: int, factor: int = 10) -> int:
            return x * factor

        @flow
        def f() -> list[str]:
            return [fut.task_run_name for fut in scale.map([1, 2])]

        assert f() == ["scale-1-by-10", "scale-2-by-10"]


class TestPickling:
    def test_module_tasks_pickle_by_name(self) -> None:
        """A task its module exports pickles as a reference: small, and the same object back."""
        import pickle

        import cloudpickle

        from taskyard.testing import conformance

        for dumps in (pickle.dumps, cloudpickle.dumps):
            data = dumps(conformance.identity)
            assert len(data) < 200 and pickle.loads(data) is conformance.identity

    def test_local_and_changed_tasks_pickle_by_value(self) -> None:
        """A task defined in a function, or a with_options copy, pickles whole and still runs."""
        import cloudpickle

        @task
        def local(x: int) -> int:
            return x + 1

        for t in (local, double.with_options(name="copy")):
            clone = cloudpickle.loads(cloudpickle.dumps(t))
            assert clone is not t and clone.name == t.name and clone(1) == t(1)


class TestInsideATask:
    def test_direct_call_inside_a_task_runs_inline(self) -> None:
        """A task may call another task directly; it runs inline in the same worker."""

        @task
        def outer(x: int) -> int:
            return double(x) + 1

        @flow
        def f() -> int:
            return outer.submit(3).result()

        assert f() == 7

    def test_submit_inside_a_task_runs_on_a_pool_of_its_own(self) -> None:
        """submit()/map() inside a task run go to a pool local to that run; outside any flow too."""

        @task
        def outer(x: int) -> list[int]:
            return [double.submit(x).result(), *double.map([x, x + 1]).result()]

        @flow
        def f() -> list[int]:
            return outer.submit(1).result()

        assert f() == [2, 2, 4]
        assert outer(2) == [4, 4, 6]
