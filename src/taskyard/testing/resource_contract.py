"""The resource part of the runner contract: one meaning of ``@task(resources=...)`` everywhere.

These tests need a runner that *has* resources. The ``resource_runner``
fixture gives one: by default ``runner.with_resources(resource_capacity)``
(a copy with the same constructor arguments plus ``resources=``, as the
built-in runners take it). A runner that declares resources another way
overrides ``with_resources`` or this fixture and returns an unstarted runner whose backend has
exactly that capacity in total — on a cluster, one worker or node with
``gpu`` 1 (so a capacity of 1 really means one run at a time) and
``contract_widget`` 2. A runner with no way at all to declare resources is
skipped here, saying so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskyard import flow, task, wait
from taskyard.exceptions import UnsatisfiableResourcesError
from taskyard.runners.base import TaskRunner
from taskyard.testing.hermetic import HermeticHome

__all__ = ("TaskRunnerResourceContract",)


@task(resources={"cpu": 1, "gpu": 1, "memory": "1 MiB", "contract_widget": 1})
def asks_for_little(x: int) -> int:
    return x + 1


@task(resources={"gpu": 1})
def gpu_interval(path: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{start} {time.time()}\n")


@task
def asks_for_nothing(x: int) -> int:
    return x


def _peak(lines: list[str]) -> int:
    events = []
    for line in lines:
        start, end = map(float, line.split())
        events += [(start, 1), (end, -1)]
    peak = current = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


class TaskRunnerResourceContract(HermeticHome):
    """Resource requests: met when they can be, refused at once when they never can."""

    #: The capacity ``resource_runner`` must have in total.
    resource_capacity: ClassVar[dict[str, float]] = {"gpu": 1, "contract_widget": 2}

    @pytest.fixture
    def resource_runner(self, runner: TaskRunner[Any]) -> TaskRunner[Any]:
        """``runner`` with ``resource_capacity`` declared; override for runners declaring it otherwise."""
        try:
            return runner.with_resources(self.resource_capacity)
        except TypeError as exc:
            pytest.skip(f"the runner cannot declare resources ({exc}); override the resource_runner fixture")

    def test_a_satisfiable_request_runs(self, resource_runner: TaskRunner[Any]) -> None:
        """A run asking for cpu, gpu, memory and a custom resource the runner has completes."""

        @flow(task_runner=resource_runner)
        def f() -> list[int]:
            return [asks_for_little.submit(1).result(timeout=60), *asks_for_little.map([2, 3]).result(timeout=60)]

        assert f() == [2, 3, 4], "a run whose request fits the runner's capacity must run and complete"

    @pytest.mark.parametrize(
        ("request_", "shown"),
        [
            ({"gpu": 2}, "gpu=2"),
            ({"contract_unobtainium": 1}, "contract_unobtainium=1"),
            ({"memory": "1 PiB"}, "memory=1024 TiB"),
        ],
        ids=["more-than-capacity", "undeclared-resource", "more-memory-than-anywhere"],
    )
    def test_an_impossible_request_fails_at_once_naming_it(
        self, resource_runner: TaskRunner[Any], request_: dict[str, Any], shown: str
    ) -> None:
        """A run asking for more than the runner can ever offer ends Failed, naming the request, never waits."""
        impossible = asks_for_nothing.with_options(resources=request_)

        @flow(task_runner=resource_runner)
        def f() -> list[tuple[str, str, BaseException | None]]:
            futures = [impossible.submit(1), *impossible.map([1, 2]), asks_for_nothing.submit(5)]
            done, not_done = wait(futures, timeout=60)
            assert not not_done, "a request nothing can satisfy must fail at once, not wait for capacity"
            return [(x.state.name, x.state.message or "", x.state.exception()) for x in futures]

        *refused, (plain_name, _, _) = f()
        assert plain_name == "Completed", "a run without a request must not be affected"
        for name, message, exc in refused:
            assert name == "Failed", f"an unsatisfiable request must end Failed, not {name}"
            assert shown in message, f"the message must name the request {shown!r}: {message!r}"
            assert isinstance(exc, UnsatisfiableResourcesError), "result() must raise UnsatisfiableResourcesError"

    def test_a_capacity_of_one_runs_requests_one_at_a_time(
        self, resource_runner: TaskRunner[Any], tmp_path: Path
    ) -> None:
        """Runs asking for gpu=1 where there is one gpu never overlap."""
        log = tmp_path / "intervals"

        @flow(task_runner=resource_runner)
        def f() -> None:
            gpu_interval.map([str(log)] * 4, 0.1).wait(timeout=120)

        f()
        lines = log.read_text().splitlines()
        assert len(lines) == 4, "every run must complete"
        assert _peak(lines) == 1, "runs asking for the only gpu must run one at a time"
