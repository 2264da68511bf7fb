"""The Prefect behaviours of the runner contract: the ones whose answer depends on where a task runs.

A Prefect flow must run the same on every runner once its imports change
(docs/coming-from-prefect.md): submitting from inside a task run, async
hooks, mapping over ``**kwargs``, ``return_state`` on ``map``. The tasks live
at module level so that workers in other processes can import them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from taskyard import flow, task
from taskyard.runners.base import TaskRunner
from taskyard.testing.hermetic import HermeticHome

__all__ = ("TaskRunnerPrefectContract",)


@task
def plus_one(x: int) -> int:
    return x + 1


@task
def submits_inside(path: str) -> str:
    """Submits a run it never waits for: the engine waits for it when this task returns."""
    writes_later.submit(path)
    return path


@task
def writes_later(path: str) -> None:
    time.sleep(0.2)
    Path(path).write_text("written")


@task
def maps_inside(items: list[int]) -> list[int]:
    return [int(x) for x in plus_one.map(items).result()]


@task
def calls_inside(x: int) -> int:
    return int(plus_one(x))


@task
def keywords(x: int, **kw: Any) -> list[Any]:
    return [x, sorted(kw.items())]


@task
def succeeds() -> str:
    return "ok"


def _write_async_hook(directory: Path) -> Any:
    async def hook(task: Any, task_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        Path(directory, f"async-hook-{task_run.state_name}").write_text(state.name)

    return hook


class TaskRunnerPrefectContract(HermeticHome):
    """Prefect behaviours every runner keeps alike."""

    def test_submit_and_map_inside_a_task_run(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """submit()/map() inside a task run work on every runner; what it submitted is done when it returns."""
        path = str(tmp_path / "nested")

        @flow(task_runner=runner)
        def f() -> list[Any]:
            return [maps_inside.submit([1, 2, 3]).result(), submits_inside.submit(path).result(), calls_inside.submit(2).result()]

        assert f() == [[2, 3, 4], path, 3]
        assert Path(path).read_text() == "written"

    def test_tasks_waiting_on_their_own_submissions_never_deadlock(self, runner: TaskRunner[Any]) -> None:
        """More tasks than the runner has workers, each waiting on runs it submitted, all complete."""

        @flow(task_runner=runner)
        def f() -> list[list[int]]:
            return maps_inside.map([[i, i] for i in range(8)]).result()

        assert f() == [[i + 1, i + 1] for i in range(8)]

    def test_async_hooks_are_awaited(self, runner: TaskRunner[Any], tmp_path: Path) -> None:
        """An async def hook runs to its end wherever the task runs; task_run.state_name is final there."""
        with_hook = succeeds.with_options(on_completion=[_write_async_hook(tmp_path)])

        @flow(task_runner=runner)
        def f() -> str:
            return str(with_hook.submit().result())

        assert f() == "ok"
        assert (tmp_path / "async-hook-Completed").read_text() == "Completed"

    def test_map_over_keyword_arguments_and_return_state(self, runner: TaskRunner[Any]) -> None:
        """map() maps iterables given through **kwargs; return_state=True gives the States in order."""

        @flow(task_runner=runner)
        def f() -> list[Any]:
            states = keywords.map([1, 2], y=[3, 4], z="whole", return_state=True)
            return [s.result() for s in states]

        assert f() == [[1, [("y", 3), ("z", "whole")]], [2, [("y", 4), ("z", "whole")]]]
