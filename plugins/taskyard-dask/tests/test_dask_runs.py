"""taskyard.runs with the Dask runner: a started flow run is recorded, and cancel really stops it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskyard import flow, task
from taskyard.runs import cancel_flow_run, read_flow_run, start_flow_run, wait_for_flow_run
from taskyard_dask import DaskTaskRunner

WAIT = 120


@task
def doze(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow
def dozing(n: int, seconds: float) -> list[float]:
    return doze.map([seconds] * n).result()


def _hook(marker: str) -> Any:
    def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
        Path(marker).write_text(state.name)

    return on_cancellation


class TestRunsOnDask:
    def test_task_runs_on_workers_are_recorded(self, dask_address: str) -> None:
        """A flow run on Dask, started in its own process, records every task run with its final state."""
        run_id = start_flow_run(dozing.with_options(task_runner=DaskTaskRunner(address=dask_address)), {"n": 6, "seconds": 0})
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_completed() and run.task_runner == "dask"
        assert sorted(t.map_index for t in run.task_runs) == list(range(6))
        assert all(t.state.is_completed() for t in run.task_runs)

    def test_cancel_stops_a_flow_run_on_dask(self, dask_address: str, tmp_path: Path) -> None:
        """cancel_flow_run: outstanding Dask runs end Cancelled, the hook runs, the run ends Cancelled."""
        marker = tmp_path / "cancelled"
        flow_obj = dozing.with_options(task_runner=DaskTaskRunner(address=dask_address), on_cancellation=[_hook(str(marker))])
        run_id = start_flow_run(flow_obj, {"n": 30, "seconds": 0.5})
        deadline = time.monotonic() + WAIT
        while read_flow_run(run_id).state.name != "Running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        time.sleep(1.0)  # some runs are on the workers now
        cancel_flow_run(run_id)
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_cancelled()
        assert marker.read_text() == "Cancelled"
        assert run.task_counts.get("Cancelled", 0) >= 1 and run.task_counts.get("Completed", 0) < 30
        assert sum(run.task_counts.values()) == 30
