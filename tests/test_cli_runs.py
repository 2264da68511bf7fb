"""``taskyard runs``: the recorded runs from the shell."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from taskyard.cli.main import cli

FLOW_FILE = '''
from taskyard import flow, get_run_logger, task

@task(persist_result=True)
def square(x: int) -> int:
    get_run_logger().info("squaring %d", x)
    return x * x

@task
def label(text: str) -> str:
    return text

@flow
def total(n: int = 3) -> int:
    label("kept in memory only")
    return sum(square.map(range(n)).result())
'''


@pytest.fixture
def run_id(tmp_path: Path) -> Iterator[str]:
    """The id of a recorded run of ``total`` (n=4), made with ``taskyard run``."""
    path = tmp_path / "flows.py"
    path.write_text(FLOW_FILE)
    logger = logging.getLogger("taskyard")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        done = CliRunner().invoke(cli, ["run", f"{path}:total", "--param", "n=4"])
    finally:
        logger.setLevel(level)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "14"
    match = re.search(r"flow run ([0-9a-f]{32})", done.stderr)
    assert match, done.stderr
    yield match[1]


def _ok(*args: str) -> str:
    done = CliRunner().invoke(cli, ["runs", *args])
    assert done.exit_code == 0, done.output
    return done.stdout


class TestRunsCommands:
    def test_run_prints_the_run_id_and_ls_lists_it(self, run_id: str) -> None:
        """`taskyard run` prints the run id (stderr); `runs ls` shows the run with its task counts."""
        out = _ok("ls")
        header, row = out.splitlines()
        assert header.split() == ["ID", "NAME", "FLOW", "DEPLOYMENT", "STATE", "START", "DURATION", "TASK", "RUNS"]
        assert row.startswith(run_id[:8]) and "total" in row and "Completed" in row and "Completed:5" in row
        assert _ok("ls", "--flow", "other").splitlines()[1:] == []
        assert [r["id"] for r in json.loads(_ok("ls", "--json", "--state", "completed", "--since", "1h"))] == [run_id]

    def test_show_lists_task_runs_and_a_timeline(self, run_id: str) -> None:
        """`runs show` gives the states, every task run and a timeline; --json gives the same as data."""
        out = _ok("show", run_id[:10])
        assert "state Completed" in out and "5 task runs (Completed:5)" in out
        assert out.count("square-") >= 8 and "timeline:" in out and "Running" in out
        data = json.loads(_ok("show", run_id, "--json"))
        assert data["state"]["name"] == "Completed" and len(data["task_runs"]) == 5
        assert sorted(t["map_index"] for t in data["task_runs"]) == [-1, 0, 1, 2, 3]

    def test_result_reads_persisted_results(self, run_id: str) -> None:
        """`runs result` prints a mapped task's results, or one of them with --index."""
        assert _ok("result", run_id, "square").strip() == "[0, 1, 4, 9]"
        assert _ok("result", run_id, "square", "--index", "3").strip() == "9"
        assert json.loads(_ok("result", run_id, "square", "--json")) == [0, 1, 4, 9]

    def test_mistakes_print_one_line_and_exit_non_zero(self, run_id: str) -> None:
        """An unknown run, or a result that was not persisted, is one line on stderr, no traceback."""
        for args, code, text in (
            (["show", "f" * 32], 2, "no flow run"),
            (["result", run_id, "label"], 1, "persist_result"),
            (["result", run_id, "nope"], 2, "no task 'nope'"),
            (["ls", "--since", "yesterday-ish"], 2, "--since"),
        ):
            done = CliRunner().invoke(cli, ["runs", *args])
            assert done.exit_code == code, done.output
            assert text in done.stderr and len(done.stderr.strip().splitlines()) == 1
            assert "Traceback" not in done.output

    def test_rename_cancel_and_logs(self, run_id: str) -> None:
        """`rename` renames; `cancel` leaves a final run alone; `logs` prints its recorded records."""
        _ok("rename", run_id, "nightly")
        assert "nightly" in _ok("ls")
        assert "already Completed" in _ok("cancel", run_id)
        logs = _ok("logs", run_id)
        assert logs.count("squaring") == 4 and "INFO" in logs


class TestModuleEntry:
    def test_python_dash_m_taskyard_is_the_same_cli(self) -> None:
        """`python -m taskyard runs ls` works like the console script."""
        done = subprocess.run([sys.executable, "-m", "taskyard", "runs", "ls"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[:3] == ["ID", "NAME", "FLOW"]
