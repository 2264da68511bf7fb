"""Faults on a runner-started LocalCluster: kills, SIGTERM and Ctrl-C leave nothing and print one line."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from taskyard.runs import list_flow_runs
from taskyard.states import StateType
from taskyard.testing.faults import interrupt_tracebacks, napping_flow, said

pytestmark = pytest.mark.faults

RUNNER = 'DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})'


def _start(flow_process: Any, tmp_path: Path, hook_seconds: float = 0) -> Any:
    script = napping_flow(
        tmp_path, RUNNER, imports="from taskyard_dask import DaskTaskRunner", hook_seconds=hook_seconds,
        call='if __name__ == "__main__":\n    f()',
    )  # fmt: skip
    fp = flow_process(script)
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
        assert (tmp_path / "hook").read_text().startswith("Cancelled|")
        # distributed may still log its own shutdown races (a worker's failed heartbeat); never an interrupt's.
        assert not interrupt_tracebacks(err) and "taskyard: flow 'f' was cancelled: the process received SIGTERM" in err
        assert fp.survivors(within=10) == []

    def test_ctrl_c_to_the_group_prints_one_line(self, flow_process: Any, tmp_path: Path) -> None:
        """Ctrl-C to the whole process group (worker processes too): one line, nothing from distributed, nothing survives."""
        fp = _start(flow_process, tmp_path)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGINT, err
        assert (tmp_path / "hook").read_text().startswith("Cancelled|")
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"], err
        assert fp.survivors(within=10) == []

    def test_ctrl_c_twice_to_the_group_finishes_the_clean_up(self, flow_process: Any, tmp_path: Path) -> None:
        """Two Ctrl-C to the whole process group: the hook finishes, the run ends Cancelled, one line, bounded exit."""
        fp = _start(flow_process, tmp_path, hook_seconds=1.5)
        fp.signal(signal.SIGINT, group=True)
        fp.wait_for_output(tmp_path / "hook", timeout=60)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, seconds = fp.finish(timeout=60)
        assert status == -signal.SIGINT and (tmp_path / "hook-done").exists()
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"], err
        assert seconds < 45, f"the process took {seconds:.1f} s to exit"  # no 10 s waits of Dask's own; generous for a busy machine
        (run,) = list_flow_runs(flow_name="f")
        assert run.state.type == StateType.CANCELLED
        assert fp.survivors(within=10) == []


STARTING = """
from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

@task
def one(x):
    return x

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
def f():
    return one.map(range(3)).result()

if __name__ == "__main__":
    f()
"""


class TestInterruptedStart:
    def test_ctrl_c_while_the_cluster_starts_prints_one_line(self, flow_process: Any) -> None:
        """Ctrl-C while the LocalCluster's worker processes start: one line (no Status.init assertion), nothing survives."""
        fp = flow_process(STARTING)
        deadline = time.monotonic() + 120
        while not [p for p in fp.remember_children() if _alive_worker(p)]:  # a nanny's worker process exists
            assert fp.proc.poll() is None and time.monotonic() < deadline, "no worker process started"
            time.sleep(0.01)
        fp.signal(signal.SIGINT)
        status, _, err, _ = fp.finish(timeout=120)
        assert status == -signal.SIGINT, err
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"], err
        assert fp.survivors(within=10) == []

    def test_ctrl_c_to_the_group_while_workers_spawn_prints_one_line(self, flow_process: Any) -> None:
        """Ctrl-C to the whole group while a worker process is still importing: one line, no child traceback, nothing survives."""
        fp = flow_process(STARTING)
        deadline = time.monotonic() + 120
        while not [p for p in fp.remember_children() if _alive_worker(p)]:  # spawned, not set up yet
            assert fp.proc.poll() is None and time.monotonic() < deadline, "no worker process started"
            time.sleep(0.01)
        time.sleep(0.3)  # it is importing (distributed takes seconds): a Python that would print a traceback
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=120)
        assert status == -signal.SIGINT, err
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"], err
        assert fp.survivors(within=10) == []


def _alive_worker(process: Any) -> bool:
    try:
        return "spawn_main" in " ".join(process.cmdline()) and process.is_running()
    except psutil.Error:
        return False


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
