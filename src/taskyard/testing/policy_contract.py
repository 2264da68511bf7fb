"""The engine's policies on a runner: retries, timeouts, caching, hooks, logs, limits, persisted results.

Part of :class:`taskyard.testing.TaskRunnerContract`. These behaviours are the
engine's, so they must hold wherever a runner runs the task; the tasks live at
module level so runners that ship calls elsewhere can import them there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, task, wait
from taskyard.runners.base import TaskRunner
from taskyard.states import StateType
from taskyard.testing.errors import ContractError
from taskyard.testing.hermetic import HermeticHome

__all__ = ("TaskRunnerPolicyContract", "TaskRunnerPersistenceContract")


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
