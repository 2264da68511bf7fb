"""The fault harness: real processes, real signals, bounded waits.

Every test under tests/faults carries the ``faults`` marker
(``pytest -m faults`` runs only them, ``-m "not faults"`` skips them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil", reason="psutil is in the test extra; install taskyard[test]")

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


class FlowProcess:
    """A flow script running in its own session, and every process it starts."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a group signal never reaches pytest
        )
        self.seen: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember_children(self) -> list[psutil.Process]:
        """Note every descendant alive now (they are checked after the flow process is gone)."""
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        return list(self.seen.values())

    def wait_for_output(self, path: Path, timeout: float = 120) -> None:
        """Wait until the script creates ``path``, noting its children meanwhile."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"the flow process ended early ({self.proc.returncode}):\n{out}\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{path.name} did not appear within {timeout} s")
            self.remember_children()
            time.sleep(0.05)
        self.remember_children()

    def signal(self, signum: int, group: bool = False) -> None:
        if group:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)

    def finish(self, timeout: float = 60) -> tuple[int, str, str, float]:
        """Wait for the flow process to exit: (status, stdout, stderr, seconds it took)."""
        started = time.monotonic()
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err, time.monotonic() - started

    def survivors(self, within: float = 10) -> list[str]:
        """The remembered descendants still alive ``within`` seconds from now (polled)."""
        deadline = time.monotonic() + within
        while True:
            alive = [p for p in self.seen.values() if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return [f"{p.pid} {' '.join(_cmdline(p))[:100]}" for p in alive]
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop whatever this test started, by pid (only if a test failed to)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        for p in self.seen.values():
            if _alive(p):
                p.kill()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except psutil.Error:
        return ["?"]


@pytest.fixture
def flow_process(tmp_path: Path) -> Iterator[object]:
    """Start flow scripts: ``start(source) -> FlowProcess``; all stopped by pid afterwards."""
    started: list[FlowProcess] = []

    def start(source: str, **env: str) -> FlowProcess:
        script = tmp_path / f"flow_{len(started)}.py"
        script.write_text(textwrap.dedent(source))
        full_env = {**os.environ, "TASKYARD_PROGRESS": "0", **env}
        fp = FlowProcess(script, full_env)
        started.append(fp)
        return fp

    yield start
    for fp in started:
        fp.cleanup()


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
