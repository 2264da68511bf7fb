"""Flow runs: parameters, runner selection, subflows, async flows, hooks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from taskyard import flow, get_run_context, task, unmapped
from taskyard.exceptions import MissingContextError, ParameterValidationError, RunnerNotFound
from taskyard.flows import task_runner_override
from taskyard.runners import ProcessPoolTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner, TaskRunner


@task
def runner_name() -> str:
    import threading

    return threading.current_thread().name


class Point(BaseModel):
    x: int
    y: int


class TestParameters:
    def test_values_are_coerced_to_hints(self) -> None:
        """Parameters are validated and coerced by pydantic from the type hints."""

        @flow
        def f(n: int, ratio: float, point: Point, names: list[str]) -> tuple[Any, ...]:
            return n, ratio, point, names

        assert f("3", 1, {"x": "1", "y": 2}, ("a",)) == (3, 1.0, Point(x=1, y=2), ["a"])

    def test_wrong_type_names_the_parameter_before_anything_runs(self) -> None:
        """A bad parameter fails before the body runs, naming it and the value."""
        ran = []

        @flow
        def f(n: int) -> None:
            ran.append(n)

        with pytest.raises(ParameterValidationError, match=r"parameter 'n'.*integer.*'abc'"):
            f("abc")
        assert ran == []

    def test_validation_can_be_turned_off(self) -> None:
        """validate_parameters=False passes values as they are."""

        @flow(validate_parameters=False)
        def f(n: int) -> Any:
            return n

        assert f("abc") == "abc"


class TestRunnerSelection:
    def test_default_is_threads(self) -> None:
        """With no task_runner, runs go to a thread pool."""

        @flow
        def f() -> str:
            return runner_name.submit().result()

        assert f().startswith("taskyard-thread")

    @pytest.mark.parametrize("spec", ["sequential", SequentialTaskRunner, SequentialTaskRunner()])
    def test_by_name_class_or_instance(self, spec: Any) -> None:
        """task_runner takes a registered name, a class or an instance."""

        @flow(task_runner=spec)
        def f() -> str:
            return runner_name.submit().result()

        assert f() == "MainThread"

    def test_unknown_name_fails_at_definition(self) -> None:
        """An unknown runner name fails when the flow is defined, listing the registered ones."""
        # the built-ins, with any installed plugins (dask, ray) among them in order
        with pytest.raises(RunnerNotFound, match=r"'nope'.*processes, (ray, )?sequential, threads"):

            @flow(task_runner="nope")
            def f() -> None: ...

    def test_unknown_name_in_with_options(self) -> None:
        """with_options checks the runner name too."""

        @flow
        def f() -> None: ...

        with pytest.raises(RunnerNotFound):
            f.with_options(task_runner="nope")

    def test_known_plugin_not_installed_gives_install_hint(self) -> None:
        """A known plugin name that is not installed says what to pip install."""
        from taskyard.runners.registry import RunnerRegistry

        registry = RunnerRegistry(group="taskyard.no-such-group")
        with pytest.raises(RunnerNotFound, match="in the taskyard repository with: pip install -e plugins/taskyard-ray"):
            registry.get("ray")

    def test_environment_changes_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKYARD_TASK_RUNNER picks the runner for flows naming none, read at run start."""

        @flow
        def f() -> str:
            return runner_name.submit().result()

        monkeypatch.setenv("TASKYARD_TASK_RUNNER", "sequential")
        assert f() == "MainThread"
        monkeypatch.setenv("TASKYARD_TASK_RUNNER", "threads")
        assert f().startswith("taskyard-thread")

    def test_override_beats_the_flows_own_choice(self) -> None:
        """task_runner_override (used by `taskyard run --runner`) wins over @flow(task_runner=...)."""

        @flow(task_runner="threads")
        def f() -> str:
            return runner_name.submit().result()

        with task_runner_override("sequential"):
            assert f() == "MainThread"

    def test_each_run_starts_and_stops_its_own_runner(self) -> None:
        """Every flow run uses a fresh started runner and shuts it down after."""
        seen: list[TaskRunner[Any]] = []

        class Recording(ThreadPoolTaskRunner):
            def setup(self) -> None:
                seen.append(self)

        @flow(task_runner=Recording(max_workers=2))
        def f() -> None:
            runner_name.submit()

        f()
        f()
        assert len(seen) == 2 and seen[0] is not seen[1]
        assert not any(r.started for r in seen)


class TestSubflows:
    def test_subflow_is_a_child_run(self) -> None:
        """A flow called in a flow runs as its own run and returns its result."""
        names: list[str] = []

        @flow(flow_run_name="child-{x}")
        def child(x: int) -> int:
            names.append(get_run_context().flow_run.name)  # type: ignore[union-attr]
            return x + 1

        @flow(flow_run_name="parent")
        def parent() -> int:
            value = child(1)
            names.append(get_run_context().flow_run.name)  # type: ignore[union-attr]
            return value

        assert parent() == 2
        assert names == ["child-1", "parent"]


class TestAsyncFlows:
    def test_async_flow_with_sync_and_async_tasks(self) -> None:
        """An async flow is awaited; it can submit sync tasks and await async ones."""

        @task
        async def slow_add(x: int, y: int) -> int:
            await asyncio.sleep(0.01)
            return x + y

        @task
        def inc(x: int) -> int:
            return x + 1

        @flow
        async def f() -> list[int]:
            a = await slow_add(1, 2)
            b = inc.submit(a)
            c = await slow_add.submit(b, 10)
            return [a, await b, c]

        assert asyncio.run(f()) == [3, 4, 14]

    def test_async_tasks_run_concurrently(self) -> None:
        """Async tasks awaited together in an async flow overlap."""

        @task
        async def nap() -> float:
            await asyncio.sleep(0.2)
            return time.monotonic()

        @flow
        async def f() -> int:
            results = await asyncio.gather(*(nap() for _ in range(5)))
            return len(results)

        assert asyncio.run(f()) == 5


class TestContext:
    def test_outside_any_run(self) -> None:
        """get_run_context() outside a run raises MissingContextError."""
        with pytest.raises(MissingContextError):
            get_run_context()

    def test_flow_body_has_no_task_run(self) -> None:
        """In a flow body the context has a flow run and no task run."""

        @flow
        def f() -> tuple[bool, bool]:
            ctx = get_run_context()
            return ctx.flow_run is not None, ctx.task_run is None

        assert f() == (True, True)

    @pytest.mark.parametrize("runner", ["sequential", "threads"])
    def test_the_flow_runs_runner_is_in_a_flow_bodys_context(self, runner: str) -> None:
        """get_run_context().task_runner is the flow run's started runner in its body, None in its task runs."""

        @task
        def runner_in_task() -> object:
            return get_run_context().task_runner

        @flow(task_runner=runner)
        def f() -> tuple[str, bool, object]:
            own = get_run_context().task_runner
            return own.name, own.started, runner_in_task.submit().result()

        assert f() == (runner, True, None)


class TestProcesses:
    def test_closures_and_main_module_tasks_ship(self) -> None:
        """Tasks defined in a function (closures) run on the process pool via cloudpickle."""
        offset = 100

        @task
        def shifted(x: int) -> int:
            return x + offset

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[int]:
            return shifted.map([1, 2]).result()

        assert f() == [101, 102]

    def test_unpicklable_argument_is_a_failed_state_naming_it(self) -> None:
        """An argument that cannot be pickled fails that run, naming the argument."""
        import threading

        from taskyard.exceptions import UnpicklableArgumentError

        @task
        def use(lock: Any, x: int) -> int:
            return x

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def f() -> Any:
            return use.submit(threading.Lock(), 1).result(raise_on_failure=False)

        error = f()
        assert isinstance(error, UnpicklableArgumentError)
        assert "'lock'" in str(error)

    def test_a_dying_worker_crashes_only_its_run(self) -> None:
        """A worker that dies makes its run Crashed; the pool is replaced and the others complete."""
        import os

        @task
        def maybe_die(x: int) -> int:
            if x == 3:
                os._exit(1)
            return x

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[tuple[str, Any]]:
            futures = maybe_die.map(range(6))
            futures.wait()
            return [(fut.state.name, fut.result(raise_on_failure=False)) for fut in futures]

        outcomes = f()
        assert [name for name, _ in outcomes] == ["Completed"] * 3 + ["Crashed"] + ["Completed"] * 2
        assert [value for i, (_, value) in enumerate(outcomes) if i != 3] == [0, 1, 2, 4, 5]
        assert "worker process died" in str(outcomes[3][1])


class TestProcessesFromScripts:
    SCRIPT = (
        "from taskyard import flow, task\n"
        "@task\n"
        "def sq(x): return x * x\n"
        "@flow(task_runner='processes')\n"
        "def f(): return sq.map(range(4)).result()\n"
        "print(f())\n"
    )

    def test_script_without_main_guard(self, tmp_path: Any) -> None:
        """A script without `if __name__ == "__main__"` runs its flow once, not once per worker."""
        import subprocess
        import sys

        script = tmp_path / "script.py"
        script.write_text(self.SCRIPT)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[0, 1, 4, 9]"

    def test_code_from_stdin(self) -> None:
        """A flow piped to `python -` runs on the process runner."""
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-"], input=self.SCRIPT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[0, 1, 4, 9]"


def test_remote_failures_carry_the_worker_traceback() -> None:
    """An exception raised in a worker process re-raises with the worker's traceback as __cause__."""

    @task
    def explode() -> None:
        raise ZeroDivisionError("in the worker")

    @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
    def f() -> Any:
        return explode.submit().result(raise_on_failure=False)

    error = f()
    assert isinstance(error, ZeroDivisionError)
    assert "in the worker" in str(error.__cause__) and "explode" in str(error.__cause__)


class TestProcessesShareLargeArguments:
    def test_a_large_shared_argument_is_written_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A large unmapped argument crosses to the workers once, not once per batch, and is cleaned up."""
        import glob
        import tempfile

        from taskyard.runners import shared

        refs: list[str] = []
        real = shared.SharedArguments._ref_for

        def counting(self: Any, value: Any) -> Any:
            ref = real(self, value)
            if ref is not None:
                refs.append(ref.path)
            return ref

        monkeypatch.setattr(shared.SharedArguments, "_ref_for", counting)
        blob = b"x" * (4 * 1024 * 1024)

        @task
        def size(i: int, data: bytes) -> int:
            return len(data) + i

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[int]:
            first = size.map(range(40), unmapped(blob)).result()
            again = size.map(range(2), unmapped(blob)).result()  # the same object: no new file
            return first + again

        assert f() == [len(blob) + i for i in range(40)] + [len(blob), len(blob) + 1]
        assert len(refs) == 2 and len(set(refs)) == 1  # two maps, one file
        assert not glob.glob(f"{tempfile.gettempdir()}/taskyard-shared-*/*.pkl")

    def test_small_shared_arguments_stay_inline(self) -> None:
        """Small shared values are not written to files."""
        from taskyard.runners.shared import SharedArguments

        from taskyard.context import TaskRunInfo
        from taskyard.engine import TaskCall

        @task
        def pair(a: int, b: list[int]) -> int:
            return a

        small = [1, 2, 3]
        calls = [TaskCall(pair, {"a": i, "b": small}, TaskRunInfo(str(i), str(i), "pair")) for i in range(3)]
        sharing = SharedArguments()
        sharing.replace(calls)
        assert all(c.parameters["b"] is small for c in calls)
        sharing.close()


def test_a_flow_called_inside_a_task_can_submit() -> None:
    """A flow run started from inside a task is a flow body of its own: submit works there."""

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def inner(x: int) -> int:
        return inc.submit(x).result()

    @task
    def runs_a_flow(x: int) -> int:
        return inner(x)

    @flow
    def outer() -> int:
        return runs_a_flow.submit(1).result()

    assert outer() == 2
