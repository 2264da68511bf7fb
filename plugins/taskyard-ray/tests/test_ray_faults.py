"""Faults on a local Ray the runner started: kills, SIGTERM and Ctrl-C leave nothing and print one line."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.faults

FLOW = """
import time
from pathlib import Path
from taskyard import flow, task
from taskyard_ray import RayTaskRunner

OUT = Path({out!r})

@task
def nap(x):
    (OUT / "ready").touch()
    time.sleep(120)

def on_cancellation(flow, run, state):
    (OUT / "hook").write_text(state.name)
    (OUT / "hook-done").touch()

@flow(task_runner=RayTaskRunner(init_kwargs={{"num_cpus": 2}}), on_cancellation=on_cancellation)
def f():
    nap.map(range(4)).wait()

if __name__ == "__main__":
    f()
"""

# Ray's drivers warn about token authentication unless told it is off; the local Ray has none.
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _tracebacks(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Traceback")]


def _start(flow_process: Any, tmp_path: Path) -> Any:
    fp = flow_process(FLOW.format(out=str(tmp_path)), **ENV)
    fp.wait_for_output(tmp_path / "ready", timeout=180)
    return fp


def _ray_processes(fp: Any) -> list[str]:
    names = []
    for proc in fp.remember_children():
        try:
            # The executable's own name first: a long install path would cut it off the shortened command line.
            names.append(f"{proc.name()}: {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            pass
    return names


class TestKilledFlowProcess:
    def test_sigkill_leaves_no_ray_process(self, flow_process: Any, tmp_path: Path) -> None:
        """kill -9 on the flow process: the GCS, raylet, agents and workers of its Ray are gone within 10 s."""
        fp = _start(flow_process, tmp_path)
        started = _ray_processes(fp)
        assert any("gcs_server" in p for p in started) and any("raylet" in p for p in started), started
        fp.signal(signal.SIGKILL)
        fp.finish(timeout=60)
        assert fp.survivors(within=10) == []


class TestStopping:
    def test_sigterm_is_a_clean_stop(self, flow_process: Any, tmp_path: Path) -> None:
        """SIGTERM: the Ray tasks are cancelled, on_cancellation sees Cancelled, exit by SIGTERM, nothing survives."""
        fp = _start(flow_process, tmp_path)
        fp.signal(signal.SIGTERM)
        status, _, err, seconds = fp.finish(timeout=90)
        assert status == -signal.SIGTERM, err
        assert (tmp_path / "hook").read_text() == "Cancelled" and (tmp_path / "hook-done").exists()
        assert "taskyard: flow 'f' was cancelled: the process received SIGTERM" in err and not _tracebacks(err), err
        assert fp.survivors(within=10) == []
        print(f"SIGTERM to exit: {seconds:.1f} s")

    def test_ctrl_c_during_ray_start_up_prints_one_line(self, flow_process: Any, tmp_path: Path) -> None:
        """Ctrl-C while the runner is still starting Ray: one short line, no traceback, exit by SIGINT, nothing survives."""
        fp = flow_process(FLOW.format(out=str(tmp_path)), **ENV)
        deadline = time.monotonic() + 120
        while not any("gcs_server" in p for p in _ray_processes(fp)):  # Ray is starting: its GCS is up
            assert fp.proc.poll() is None and time.monotonic() < deadline, "Ray did not start"
            time.sleep(0.02)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=90)
        assert not (tmp_path / "ready").exists(), "the interrupt came too late to test start-up"
        assert status == -signal.SIGINT, err
        assert not _tracebacks(err), err
        assert "taskyard: interrupted: flow 'f' was cancelled" in err, err
        assert fp.survivors(within=10) == []
