"""Nothing a runner starts outlives the flow process, however that process dies."""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

import pytest

FLOW = """
import sys, time
from pathlib import Path
from taskyard import flow, task
from taskyard.runners import ProcessPoolTaskRunner

@task
def nap(x):
    Path({ready!r}).touch()
    time.sleep(120)

@flow(task_runner=ProcessPoolTaskRunner(max_workers=2, start_method={method!r}))
def f():
    nap.map(range(4)).wait()

f()
"""

METHODS = [m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()]


class TestProcessRunnerLeavesNothing:
    @pytest.mark.parametrize("method", METHODS)
    @pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
    def test_no_process_survives_the_flow_process(self, flow_process: Any, tmp_path: Path, method: str, signum: int) -> None:
        """Pool workers, fork server and resource tracker are gone within 10 s of the flow process dying."""
        ready = tmp_path / "ready"
        fp = flow_process(FLOW.format(ready=str(ready), method=method))
        fp.wait_for_output(ready)
        deadline = time.monotonic() + 30  # the pool's second worker may start after the first run does
        while len(children := fp.remember_children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(children) >= 2, children
        fp.signal(signum)
        fp.finish(timeout=30)
        assert fp.survivors(within=10) == []
