"""taskyard.runs with the Ray runner: cancel_flow_run really stops a flow run on Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskyard import flow, task
from taskyard.runs import cancel_flow_run, read_flow_run, start_flow_run, wait_for_flow_run
from taskyard_ray import RayTaskRunner

WAIT = 180
NAP = 15.0


@task
def lingers(i: int, folder: str) -> int:
    Path(folder, f"{i}.started").touch()
    time.sleep(NAP)
    Path(folder, f"{i}.finished").touch()
    return i


@flow
def lingering(n: int, folder: str) -> list[int]:
    return lingers.map(range(n), folder).result()


def _hook(marker: str) -> Any:
    def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
        Path(marker).write_text(state.name)

    return on_cancellation


class TestCancelOnRay:
    def test_cancel_stops_a_flow_run_on_ray(self, ray_address: str, tmp_path: Path) -> None:
        """cancel_flow_run: running Ray tasks are stopped, the rest never start, the hook runs, the run ends Cancelled."""
        marker, folder = tmp_path / "cancelled", tmp_path / "runs"
        folder.mkdir()
        flow_obj = lingering.with_options(task_runner=RayTaskRunner(address=ray_address), on_cancellation=[_hook(str(marker))])
        run_id = start_flow_run(flow_obj, {"n": 12, "folder": str(folder)})
        deadline = time.monotonic() + WAIT
        while not list(folder.glob("*.started")):
            assert time.monotonic() < deadline, f"no run started on Ray: {read_flow_run(run_id).state}"
            time.sleep(0.1)
        first_start = time.monotonic()
        cancel_flow_run(run_id)
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_cancelled(), run.state
        assert marker.read_text() == "Cancelled"
        assert run.task_counts.get("Cancelled", 0) >= 1 and sum(run.task_counts.values()) == 12
        # Runs that were on Ray when the cancel came would finish NAP s after they started, had they not been stopped.
        time.sleep(max(0.0, first_start + NAP + 3 - time.monotonic()))
        assert list(folder.glob("*.finished")) == [], "cancelled Ray tasks kept running"
        started = len(list(folder.glob("*.started")))
        assert started < 12, "every run started: the cancel did not stop new ones"
