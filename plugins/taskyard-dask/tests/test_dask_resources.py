"""``@task(resources=...)`` on Dask: worker resources on the real scheduler, and refusals."""

from __future__ import annotations

import math

import pytest

from taskyard import flow, task
from taskyard.exceptions import UnsatisfiableResourcesError
from taskyard_dask import DaskTaskRunner, dask_options
from taskyard_dask.resources import dask_resources, worker_capacity

GIB = 2**30


@task
def restrictions(i: int = 0) -> dict[str, float]:
    """The worker resources Dask restricted this very run to."""
    from distributed import get_worker

    worker = get_worker()
    return dict(worker.state.tasks[worker.get_current_task()].resource_restrictions or {})


class TestMapping:
    def test_names_map_to_dask_conventions(self) -> None:
        """gpu → GPU, custom names unchanged; cpu and memory only where workers declare CPU/MEMORY."""
        request = {"gpu": 1.0, "cpu": 2.0, "memory": 4.0 * GIB, "licence": 1.0, "zero": 0.0}
        assert dask_resources(request, frozenset()) == {"GPU": 1.0, "licence": 1.0}
        assert dask_resources(request, frozenset({"CPU", "MEMORY"})) == {
            "GPU": 1.0,
            "CPU": 2.0,
            "MEMORY": 4.0 * GIB,
            "licence": 1.0,
        }

    def test_a_worker_without_cpu_or_memory_resources_offers_its_threads_and_memory_limit(self) -> None:
        """Undeclared CPU is the thread count; undeclared MEMORY the memory limit (0: unlimited)."""
        info = {"resources": {"GPU": 2, "licence": 1}, "nthreads": 4, "memory_limit": GIB}
        assert worker_capacity(info, frozenset({"GPU"})) == {"gpu": 2.0, "licence": 1.0, "cpu": 4.0, "memory": GIB}
        unlimited = worker_capacity({"nthreads": 1, "memory_limit": 0}, frozenset())
        assert unlimited["memory"] == math.inf
        declared = worker_capacity({"resources": {"CPU": 8}, "nthreads": 1}, frozenset({"CPU"}))
        assert declared["cpu"] == 8.0


class TestOnTheCluster:
    def test_the_request_reaches_the_scheduler_as_worker_resources(self, dask_resource_address: str) -> None:
        """A run asking for gpu and a custom resource is restricted to them on its worker."""
        asking = restrictions.with_options(resources={"gpu": 1, "contract_widget": 2, "cpu": 1})

        @flow(task_runner=DaskTaskRunner(address=dask_resource_address))
        def f() -> tuple[dict[str, float], list[dict[str, float]]]:
            return asking.submit().result(timeout=60), asking.map([1, 2]).result(timeout=60)

        single, mapped = f()
        assert single == {"GPU": 1.0, "contract_widget": 2.0}  # no worker declares CPU: threads count it
        assert mapped == [single, single]

    def test_dask_options_win_key_by_key(self, dask_resource_address: str) -> None:
        """dask_options(resources=...) overrides the mapped request for the names it gives, keeping the rest."""
        asking = restrictions.with_options(resources={"gpu": 1, "contract_widget": 1})

        @flow(task_runner=DaskTaskRunner(address=dask_resource_address))
        def f() -> dict[str, float]:
            with dask_options(resources={"contract_widget": 2}):
                return asking.submit().result(timeout=60)

        assert f() == {"GPU": 1.0, "contract_widget": 2.0}

    def test_more_memory_than_any_worker_has_is_refused_naming_it(self, dask_resource_address: str) -> None:
        """A request over the largest worker's memory limit ends Failed at once, naming both."""
        greedy = restrictions.with_options(resources={"gpu": 1, "memory": "2 GiB"})

        @flow(task_runner=DaskTaskRunner(address=dask_resource_address))
        def f() -> tuple[bool, str, BaseException | None]:
            future = greedy.submit()
            return future.done(), future.state.message or "", future.state.exception()

        done, message, exc = f()
        assert done and isinstance(exc, UnsatisfiableResourcesError)
        assert "memory=2 GiB" in message and "the largest Dask worker has memory=1 GiB" in message

    @pytest.mark.usefixtures("extra_resource_worker")
    def test_parts_on_different_workers_are_refused(self, dask_resource_address: str) -> None:
        """A request whose parts exist only on different workers is refused: a run goes to one worker."""
        split = restrictions.with_options(resources={"gpu": 1, "contract_other": 1})
        other = restrictions.with_options(resources={"contract_other": 1})

        @flow(task_runner=DaskTaskRunner(address=dask_resource_address))
        def f() -> tuple[str, dict[str, float]]:
            return split.submit().state.message or "", other.submit().result(timeout=60)

        message, ran = f()
        assert "no single Dask worker has all of gpu=1, contract_other=1" in message
        assert ran == {"contract_other": 1.0}

    def test_an_adaptive_cluster_is_judged_by_the_workers_it_would_add(self) -> None:
        """With no worker yet, an adaptive LocalCluster's worker spec decides: gpu=1 runs, gpu=2 is refused."""
        runner = DaskTaskRunner(
            cluster_kwargs={"n_workers": 0, "processes": False, "threads_per_worker": 1, "resources": {"GPU": 1}},
            adapt_kwargs={"minimum": 0, "maximum": 1},
        )
        fits = restrictions.with_options(resources={"gpu": 1})
        too_big = restrictions.with_options(resources={"gpu": 2})

        @flow(task_runner=runner)
        def f() -> tuple[str, dict[str, float]]:
            refused = too_big.submit()
            return refused.state.message or "", fits.submit().result(timeout=120)

        message, ran = f()
        assert "asks for gpu=2 but the largest Dask worker has gpu=1" in message
        assert ran == {"GPU": 1.0}
