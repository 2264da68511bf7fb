"""Faults on a runner-started LocalCluster: kills, SIGTERM and Ctrl-C leave nothing and print one line."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.faults

FLOW = """
import time
from pathlib import Path
from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

OUT = Path({out!r})

@task
def nap(x):
    (OUT / "ready").touch()
    time.sleep(120)

def on_cancellation(flow, run, state):
    (OUT / "hook").write_text(state.name)
    time.sleep({hook_seconds})
    (OUT / "hook-done").touch()

@flow(task_runner=DaskTaskRunner(cluster_kwargs={{"n_workers": 2, "threads_per_worker": 1}}), on_cancellation=on_cancellation)
def f():
    nap.map(range(4)).wait()

if __name__ == "__main__":
    f()
"""


def _interrupt_tracebacks(err: str) -> list[str]:
    """The last lines of tracebacks an interrupt left (a traceback ends with the exception's name)."""
    return [line for line in err.splitlines() if line.startswith(("KeyboardInterrupt", "taskyard.interrupts.TerminationSignal"))]


def _start(flow_process: Any, tmp_path: Path, hook_seconds: float = 0) -> Any:
    fp = flow_process(FLOW.format(out=str(tmp_path), hook_seconds=hook_seconds))
    fp.wait_for_output(tmp_path / "ready", timeout=120)
    return fp


class TestKilledFlowProcess:
    def test_sigkill_leaves_no_scheduler_nanny_or_worker(self, flow_process: Any, tmp_path: Path) -> None:
        """kill -9 on the flow process: the LocalCluster's worker processes are gone within 10 s."""
        fp = _start(flow_process, tmp_path)
        assert len(fp.remember_children()) >= 2
        fp.signal(signal.SIGKILL)
        fp.finish(timeout=60)
        assert fp.survivors(within=10) == []


class TestStopping:
    def test_sigterm_is_a_clean_stop(self, flow_process: Any, tmp_path: Path) -> None:
        """SIGTERM: on_cancellation sees Cancelled, the process ends by SIGTERM, nothing survives, no traceback."""
        fp = _start(flow_process, tmp_path)
        fp.signal(signal.SIGTERM)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGTERM, err
        assert (tmp_path / "hook").read_text() == "Cancelled"
        # distributed may still log its own shutdown races (a worker's failed heartbeat); never an interrupt's.
        assert not _interrupt_tracebacks(err) and "taskyard: flow 'f' was cancelled: the process received SIGTERM" in err
        assert fp.survivors(within=10) == []

    def test_ctrl_c_twice_to_the_group_finishes_the_clean_up(self, flow_process: Any, tmp_path: Path) -> None:
        """Two Ctrl-C to the whole process group: the hook finishes, no traceback, nothing survives."""
        fp = _start(flow_process, tmp_path, hook_seconds=1.5)
        fp.signal(signal.SIGINT, group=True)
        fp.wait_for_output(tmp_path / "hook", timeout=60)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, seconds = fp.finish(timeout=60)
        assert status == -signal.SIGINT and (tmp_path / "hook-done").exists()
        assert not _interrupt_tracebacks(err) and "taskyard: interrupted: flow 'f' was cancelled" in err
        assert fp.survivors(within=10) == []


UNPICKLABLE = """
import threading
from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

@task
def lock():
    return threading.Lock()

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}))
def f():
    future = lock.submit()
    future.wait()
    return future.state.name, future.state.message

if __name__ == "__main__":
    print(f())
"""


class TestQuietFailures:
    def test_an_unpicklable_result_fails_in_one_line_without_dask_errors(self, flow_process: Any) -> None:
        """A result that cannot be pickled ends Failed with one clear message; distributed logs nothing."""
        fp = flow_process(UNPICKLABLE)
        status, out, err, _ = fp.finish(timeout=120)
        assert status == 0, err
        assert out.startswith("('Failed', ") and "cannot be sent back from its Dask worker (TypeError:" in out
        assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
        assert "distributed.protocol" not in err and "CRITICAL" not in err and "Traceback" not in err, err
