"""Faults on a local Ray the runner started: kills, SIGTERM and Ctrl-C leave nothing and print one line."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from taskyard.runs import list_flow_runs
from taskyard.states import StateType
from taskyard.testing.faults import napping_flow, said, tracebacks

pytestmark = pytest.mark.faults

ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # as the rest of the Ray tests


def _script(tmp_path: Path, hook_seconds: float = 0) -> str:
    return napping_flow(
        tmp_path, 'RayTaskRunner(init_kwargs={"num_cpus": 2})', imports="from taskyard_ray import RayTaskRunner",
        hook_seconds=hook_seconds, call='if __name__ == "__main__":\n    f()',
    )  # fmt: skip


def _start(flow_process: Any, tmp_path: Path, hook_seconds: float = 0) -> Any:
    fp = flow_process(_script(tmp_path, hook_seconds), **ENV)
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
        assert (tmp_path / "hook").read_text().startswith("Cancelled|") and (tmp_path / "hook-done").exists()
        # One line: Ray's own start-up notices (a local instance started, token authentication) are not shown.
        assert said(err) == ["taskyard: flow 'f' was cancelled: the process received SIGTERM"], err
        assert fp.survivors(within=10) == []
        print(f"SIGTERM to exit: {seconds:.1f} s")

    def test_ctrl_c_twice_hurries_but_finishes_the_clean_up(self, flow_process: Any, tmp_path: Path) -> None:
        """A second Ctrl-C while the runner shuts Ray down: the hook still runs, the run ends Cancelled, one line, bounded exit."""
        fp = _start(flow_process, tmp_path, hook_seconds=1.5)
        fp.signal(signal.SIGINT, group=True)
        time.sleep(0.3)  # the runner is cancelling the Ray tasks and shutting Ray down
        fp.signal(signal.SIGINT, group=True)
        status, _, err, seconds = fp.finish(timeout=90)
        assert status == -signal.SIGINT, err
        assert (tmp_path / "hook").read_text().startswith("Cancelled|") and (tmp_path / "hook-done").exists()
        assert "taskyard: interrupted: flow 'f' was cancelled" in err and not tracebacks(err), err
        assert seconds < 45, f"the process took {seconds:.1f} s to exit"  # generous for a busy machine
        (run,) = list_flow_runs(flow_name="f")
        assert run.state.type == StateType.CANCELLED
        assert fp.survivors(within=10) == []
        print(f"Ctrl-C twice to exit: {seconds:.1f} s")

    def test_ctrl_c_during_ray_start_up_prints_one_line(self, flow_process: Any, tmp_path: Path) -> None:
        """Ctrl-C while the runner is still starting Ray: one short line, no traceback, exit by SIGINT, nothing survives."""
        fp = flow_process(_script(tmp_path), **ENV)
        deadline = time.monotonic() + 120
        while not any("gcs_server" in p for p in _ray_processes(fp)):  # Ray is starting: its GCS is up
            assert fp.proc.poll() is None and time.monotonic() < deadline, "Ray did not start"
            time.sleep(0.02)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=90)
        assert not (tmp_path / "ready").exists(), "the interrupt came too late to test start-up"
        assert status == -signal.SIGINT, err
        assert not tracebacks(err), err
        assert "taskyard: interrupted: flow 'f' was cancelled" in err, err
        assert fp.survivors(within=10) == []
