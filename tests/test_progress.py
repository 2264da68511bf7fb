"""The live progress display of maps: counters, and what a terminal shows."""

from __future__ import annotations

import os
import re
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskyard.futures import TaskFuture
from taskyard.progress import RunCounter
from taskyard.states import Completed, Crashed, Failed

SCRIPT = """
import sys, time
from taskyard import flow, task

@task
def square(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    time.sleep({sleep})
    return x * x

@flow
def squares(xs: list[int]) -> int:
    return len(square.map(xs).result(raise_on_failure=False))

if __name__ == "__main__":
    print("runs", squares.with_options(task_runner=sys.argv[1])({items}))
    print("rich imported:", "rich" in sys.modules)
"""


def run_flow(tmp_path: Path, *, tty: bool, runner: str = "threads", items: str = "list(range(40))", sleep: float = 0.05, **env: str) -> str:
    """Run the map script with stdout on a pseudo-terminal (or a pipe); return everything it wrote."""
    script = tmp_path / "flows.py"
    script.write_text(SCRIPT.format(items=items, sleep=sleep))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_") or k == "TASKYARD_HOME"}
    full_env = {**clean, "TASKYARD_LOGGING_CONSOLE": "0", "COLUMNS": "120", "TERM": "xterm", **env}
    command = [sys.executable, str(script), runner]
    if not tty:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=full_env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=full_env, cwd=tmp_path)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


class TestRunCounter:
    def test_counts_done_and_failed_per_task_name(self) -> None:
        """Each finished future counts as done; failed and crashed ones also as failed."""
        counter = RunCounter()
        futures: list[TaskFuture[int]] = [TaskFuture(str(i)) for i in range(4)]
        counter.track("square", futures[:3], mapped=True)
        counter.track("other", futures[3:])
        futures[0]._set_state(Completed(1))
        futures[1]._set_state(Failed(ValueError("x")))
        futures[3]._set_state(Crashed("lost"))
        rows = {name: (done, failed, total) for name, done, failed, total, _ in counter.snapshot()}
        assert rows == {"square": (2, 1, 3), "other": (1, 1, 1)}

    def test_a_counter_without_delay_never_starts_a_display(self) -> None:
        """RunCounter() only counts: no display thread is started by a map."""
        counter = RunCounter()
        counter.track("square", [TaskFuture("a")], mapped=True)
        assert counter.display is None


@pytest.mark.parametrize("runner", ["sequential", "threads", "processes"])
class TestDisplayOnATerminal:
    def test_a_map_shows_live_progress(self, tmp_path: Path, runner: str) -> None:
        """On a terminal, a map shows its task name, done/total, failures, rate and elapsed time."""
        out = run_flow(tmp_path, tty=True, runner=runner, items="list(range(30)) + [-1, -2]", TASKYARD_PROGRESS_DELAY="0")
        final = [line for line in out.splitlines() if "square" in line and "32/32 done" in line]
        assert final, out
        assert "2 failed" in final[-1] and "/s" in final[-1] and "0:00:0" in final[-1]
        assert "runs 32" in out and "rich imported: True" in out


class TestDisplayOff:
    def test_off_by_setting(self, tmp_path: Path) -> None:
        """TASKYARD_PROGRESS=0 turns the display off on a terminal."""
        out = run_flow(tmp_path, tty=True, TASKYARD_PROGRESS="0", TASKYARD_PROGRESS_DELAY="0")
        assert "done" not in out and "rich imported: False" in out

    def test_off_when_stdout_is_not_a_terminal(self, tmp_path: Path) -> None:
        """With stdout on a pipe there is no display, and rich is never imported."""
        out = run_flow(tmp_path, tty=False, TASKYARD_PROGRESS_DELAY="0")
        assert "done" not in out and "rich imported: False" in out

    def test_a_short_flow_shows_nothing(self, tmp_path: Path) -> None:
        """A flow run that ends before the delay shows no display (no flicker)."""
        out = run_flow(tmp_path, tty=True, sleep=0, items="[1, 2, 3]", TASKYARD_PROGRESS_DELAY="5")
        assert "done" not in out and "rich imported: False" in out

    def test_the_display_appears_after_the_delay(self, tmp_path: Path) -> None:
        """A flow longer than the delay shows the display."""
        # 40 runs of 0.4 s outlast the 0.5 s delay even on a pool of 32 threads (the most it gets).
        out = run_flow(tmp_path, tty=True, sleep=0.4, items="list(range(40))", TASKYARD_PROGRESS_DELAY="0.5")
        assert "40/40 done" in out

    def test_the_display_appears_after_the_delay_on_sequential(self, tmp_path: Path) -> None:
        """On the sequential runner (runs finish as they are placed) the display also appears, counting as they end."""
        out = run_flow(tmp_path, tty=True, runner="sequential", sleep=0.1, items="list(range(12))", TASKYARD_PROGRESS_DELAY="0.3")
        assert "12/12 done" in out
        partial = re.findall(r"\b(\d+)/12 done", out)
        assert any(0 < int(n) < 12 for n in partial), out  # drawn while the map ran, not only at its end
