"""SIGTERM and Ctrl-C stop a flow run cleanly on every runner: hooks, Cancelled, one line, no survivors."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from taskyard.testing.faults import napping_flow, said

RUNNERS = ["sequential", "threads", "processes"]


def _start(flow_process: Any, tmp_path: Path, runner: str, hook_seconds: float = 0, call: str = "f()") -> Any:
    fp = flow_process(napping_flow(tmp_path, repr(runner), hook_seconds=hook_seconds, call=call))
    fp.wait_for_output(tmp_path / "ready")
    return fp


@pytest.mark.parametrize("runner", RUNNERS)
class TestSigterm:
    def test_sigterm_cancels_runs_hooks_and_exits_143(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """SIGTERM: on_cancellation sees Cancelled, one line on stderr, the process ends by SIGTERM, nothing survives."""
        fp = _start(flow_process, tmp_path, runner)
        fp.signal(signal.SIGTERM)
        status, out, err, seconds = fp.finish(timeout=60)
        assert status == -signal.SIGTERM, err
        assert (tmp_path / "hook").read_text().startswith("Cancelled|") and (tmp_path / "hook-done").exists()
        assert said(err) == ["taskyard: flow 'f' was cancelled: the process received SIGTERM"]
        assert fp.survivors(within=10) == []

    def test_a_second_sigterm_never_skips_the_hooks(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """SIGTERM twice to the whole process group while a hook runs: the hook still finishes, no traceback."""
        fp = _start(flow_process, tmp_path, runner, hook_seconds=1.5)
        fp.signal(signal.SIGTERM, group=True)
        fp.wait_for_output(tmp_path / "hook", timeout=30)
        fp.signal(signal.SIGTERM, group=True)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGTERM and (tmp_path / "hook-done").exists()
        assert "Traceback" not in err and len(said(err)) == 1
        assert fp.survivors(within=10) == []


@pytest.mark.parametrize("runner", RUNNERS)
class TestCtrlC:
    def test_ctrl_c_to_the_process_group_prints_one_line(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """SIGINT to the terminal's process group (workers too): hooks run, one line, exit by SIGINT, no survivors."""
        fp = _start(flow_process, tmp_path, runner)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGINT, err
        assert (tmp_path / "hook").read_text().startswith("Cancelled|")
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"]
        assert fp.survivors(within=10) == []

    def test_ctrl_c_twice_finishes_the_clean_up(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """A second Ctrl-C while on_cancellation runs does not interrupt it."""
        fp = _start(flow_process, tmp_path, runner, hook_seconds=1.5)
        fp.signal(signal.SIGINT, group=True)
        fp.wait_for_output(tmp_path / "hook", timeout=30)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGINT and (tmp_path / "hook-done").exists()
        assert "Traceback" not in err

    def test_the_caller_can_still_catch_the_interrupt(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """Ctrl-C reaches the code that called the flow as KeyboardInterrupt; caught, the script goes on."""
        call = "try:\n    f()\nexcept KeyboardInterrupt:\n    print('caught')\n"
        fp = _start(flow_process, tmp_path, runner, call=call)
        fp.signal(signal.SIGINT)
        status, out, err, _ = fp.finish(timeout=60)
        assert (status, out.strip(), said(err)) == (0, "caught", [])


class TestSigkill:
    @pytest.mark.parametrize("runner", RUNNERS)
    def test_sigkill_leaves_no_process(self, flow_process: Any, tmp_path: Path, runner: str) -> None:
        """kill -9 on the flow process: whatever the runner started is gone within 10 s."""
        fp = _start(flow_process, tmp_path, runner)
        fp.signal(signal.SIGKILL)
        status, _, _, _ = fp.finish(timeout=30)
        assert status == -signal.SIGKILL
        assert fp.survivors(within=10) == []


# A spawned worker's Python says it is starting up, then takes a second more: the group's Ctrl-C surely finds it so.
SLOW_START = """
import os, sys, time
if "--multiprocessing-fork" in sys.orig_argv:
    open(os.environ["STARTING_MARK"], "w").close()
    time.sleep(1.0)
"""


class TestInterruptedWorkerStart:
    def test_ctrl_c_to_the_group_while_a_pool_worker_starts(self, flow_process: Any, tmp_path: Path) -> None:
        """Ctrl-C to the whole group while a pool worker's Python starts up: one line, no child traceback, nothing survives."""
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_START)
        runner = "ProcessPoolTaskRunner(max_workers=2, start_method='spawn')"
        imports = "from taskyard.runners import ProcessPoolTaskRunner"
        source = napping_flow(tmp_path, runner, imports=imports)
        fp = flow_process(source, PYTHONPATH=str(tmp_path / "site"), STARTING_MARK=str(tmp_path / "starting"))
        fp.wait_for_output(tmp_path / "starting", timeout=60)
        fp.signal(signal.SIGINT, group=True)
        status, _, err, _ = fp.finish(timeout=60)
        assert status == -signal.SIGINT, err
        assert said(err) == ["taskyard: interrupted: flow 'f' was cancelled"], err
        assert fp.survivors(within=10) == []
