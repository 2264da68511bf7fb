"""A dead Dask worker costs the run it was running, not the runs queued on it (real scheduler and workers)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import pytest
from dask_processes import wait_for_workers

from taskyard import flow, task
from taskyard.states import StateType
from taskyard_dask import DaskTaskRunner
from taskyard_dask.losses import QUEUED, RUNNING, UNKNOWN, Deaths

pytestmark = pytest.mark.faults


@task
def innocent(i: int) -> int:
    time.sleep(0.2)
    return i


@task
def culprit() -> None:
    os._exit(1)  # the worker process dies at once, before the scheduler's next heartbeat sees the run


class TestWorkerDeaths:
    def test_runs_queued_on_a_dead_worker_complete(self, dask_processes: Any) -> None:
        """Two flow runs on 2 one-thread workers: the run calling os._exit ends Crashed 'while running'; every sibling completes."""
        address = dask_processes.address

        @flow(task_runner=DaskTaskRunner(address=address, batch_size=1))
        def f() -> tuple[list[Any], Any]:
            first = innocent.map(range(2))  # both workers busy: the culprit queues behind one of them
            bad = culprit.submit()
            rest = innocent.map(range(2, 10))  # some queue on the worker the culprit kills
            for futures in (first, rest, [bad]):
                for future in futures:
                    future.wait()
            states = [future.state for future in [*first, *rest]]
            return [(s.type, s.message) for s in states], (bad.state.type, bad.state.message)

        for _ in range(2):
            wait_for_workers(address, 2)  # the nannies have replaced the workers that died
            states, bad = f()
            assert [kind for kind, _ in states] == [StateType.COMPLETED] * 10, states
            assert bad[0] == StateType.CRASHED and "died while running task run 'culprit-" in str(bad[1]), bad
        wait_for_workers(address, 2)


def _verdicts(*lost: tuple[str, bool | None], threads: int = 1) -> dict[str, str]:
    """The verdicts of ``Deaths`` for tasks lost with one worker: (key, started) each."""
    from distributed import KilledWorker

    worker = SimpleNamespace(address="tcp://127.0.0.1:1", server_id="w", nthreads=threads)
    deaths, got = Deaths(), {}
    for key, started in lost:
        deaths.judge(KilledWorker(key, worker, 0), key, lambda s=started: s, lambda v, k=key: got.update({k: v}))
    deadline = time.monotonic() + 10
    while len(got) < len(lost) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


class TestDeaths:
    def test_no_more_runs_than_threads_were_all_running(self) -> None:
        """A worker lost with no more unreported runs than threads was running them all."""
        assert _verdicts(("a", None), ("b", None), threads=2) == {"a": RUNNING, "b": RUNNING}

    def test_more_runs_than_threads_are_unknown(self) -> None:
        """More unreported runs than threads: nothing says which ran."""
        assert _verdicts(("a", None), ("b", None)) == {"a": UNKNOWN, "b": UNKNOWN}

    def test_reported_starts_decide(self) -> None:
        """A reported start is running, a marked run without one was queued, and a full worker's others were queued."""
        assert _verdicts(("a", True), ("b", False), ("c", None)) == {"a": RUNNING, "b": QUEUED, "c": QUEUED}
