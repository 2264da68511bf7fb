"""Batching on Ray: the calls of a map share Ray tasks, as many as the batch size says."""

from __future__ import annotations

import pytest

from taskyard import flow, task
from taskyard_ray import RayTaskRunner


@task
def ray_task_id(x: int) -> str:
    import ray

    return ray.get_runtime_context().get_task_id()  # type: ignore[no-any-return]


def _task_ids(runner: RayTaskRunner, n: int, batch_size: int | None = None) -> list[str]:
    @flow(task_runner=runner)
    def f() -> list[str]:
        t = ray_task_id if batch_size is None else ray_task_id.with_options(batch_size=batch_size)
        return t.map(range(n)).result()

    return f()


@pytest.mark.usefixtures("connected")
class TestBatchesOnRay:
    def test_a_fixed_size_puts_that_many_calls_in_one_ray_task(self, ray_address: str) -> None:
        """batch_size=4 on the runner: 12 calls run as 3 Ray tasks of 4 consecutive calls each."""
        ids = _task_ids(RayTaskRunner(address=ray_address, batch_size=4), 12)
        assert [len(set(ids[i : i + 4])) for i in (0, 4, 8)] == [1, 1, 1] and len(set(ids)) == 3

    def test_batch_size_one_gives_every_call_its_own_ray_task(self, ray_address: str) -> None:
        """batch_size=1 on the task wins over the runner's 4: every call is a Ray task of its own."""
        ids = _task_ids(RayTaskRunner(address=ray_address, batch_size=4), 12, batch_size=1)
        assert len(set(ids)) == 12

    def test_adaptive_batches_grow_for_tiny_calls(self, ray_address: str) -> None:
        """By default the 2,000 no-op calls of a map run in far fewer Ray tasks than calls."""
        ids = _task_ids(RayTaskRunner(address=ray_address), 2000)
        assert len(ids) == 2000 and len(set(ids)) < 200, f"{len(set(ids))} Ray tasks for 2,000 tiny calls"

    def test_the_first_calls_of_a_map_go_first_in_pairs(self, ray_address: str) -> None:
        """Adaptive: the first calls of a map (8 per CPU) run two per Ray task, whatever earlier maps taught the size."""
        runner = RayTaskRunner(address=ray_address)

        @flow(task_runner=runner)
        def f() -> tuple[list[str], list[str]]:
            ray_task_id.map(range(2000)).result()  # the size grows well beyond two
            return ray_task_id.map(range(16)).result(), ray_task_id.map(range(200)).result()

        small, large = f()
        for ids in (small, large):
            assert [ids[i] == ids[i + 1] for i in range(0, 16, 2)] == [True] * 8 and len(set(ids[:16])) == 8, ids[:16]
