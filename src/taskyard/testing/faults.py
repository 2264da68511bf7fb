"""The fault harness: flow scripts run as real processes, signalled, and checked for survivors.

Used by the core's tests/faults and by runner plugins' fault tests (the
``flow_process`` fixture comes with taskyard's pytest plugin)::

    def test_sigkill_leaves_nothing(flow_process, tmp_path):
        fp = flow_process(SCRIPT)              # runs in its own session
        fp.wait_for_output(tmp_path / "ready")  # notes its children meanwhile
        fp.signal(signal.SIGKILL)
        fp.finish(timeout=30)
        assert fp.survivors(within=10) == []

:func:`napping_flow` writes the script most fault tests interrupt (a map of
sleeping runs and an ``on_cancellation`` hook that leaves marks) for any
runner; :func:`said` and :func:`tracebacks` read what the process printed.
Every process a test starts through it is stopped by pid afterwards. Needs
psutil (in the test extra).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ("FlowProcess", "flow_process", "napping_flow", "said", "tracebacks", "interrupt_tracebacks")

_NAPPING_FLOW = """
import time
from pathlib import Path
from taskyard import flow, task
{imports}
OUT = Path({out!r})

@task
def nap(x):
    (OUT / "ready").touch()
    time.sleep(120)

def on_cancellation(flow, run, state):
    (OUT / "hook").write_text(f"{{state.name}}|{{state.message}}")
    time.sleep({hook_seconds})
    (OUT / "hook-done").touch()

@flow(task_runner={runner}, on_cancellation=on_cancellation)
def f():
    nap.map(range(4)).wait()

{call}
"""

_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")


def napping_flow(out: Path, runner: str, imports: str = "", hook_seconds: float = 0, call: str = "f()") -> str:
    """A flow script to interrupt: flow ``f`` maps 4 runs of a task that sleeps 120 s.

    Each run touches ``out/ready`` when it starts; the ``on_cancellation``
    hook writes ``"<state name>|<message>"`` to ``out/hook``, sleeps
    ``hook_seconds`` and touches ``out/hook-done``.

    Args:
        out: The folder the script writes its marks in.
        runner: The ``task_runner=`` expression (``"'threads'"``, ``"DaskTaskRunner(...)"``).
        imports: Lines the runner expression needs (``"from taskyard_dask import DaskTaskRunner"``).
        call: What the script runs at the end.
    """
    return _NAPPING_FLOW.format(imports=imports, out=str(out), hook_seconds=hook_seconds, runner=runner, call=call)


def said(err: str) -> list[str]:
    """What stderr holds besides taskyard's console log records (docs/logging.md)."""
    return [line for line in err.strip().splitlines() if not _LOG_LINE.match(line)]


def tracebacks(err: str) -> list[str]:
    """The first lines of the tracebacks in ``err``."""
    return [line for line in err.splitlines() if line.startswith("Traceback")]


def interrupt_tracebacks(err: str) -> list[str]:
    """The last lines of tracebacks an interrupt left (a traceback ends with the exception's name)."""
    return [line for line in err.splitlines() if line.startswith(("KeyboardInterrupt", "taskyard.interrupts.TerminationSignal"))]


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
        self.seen: dict[int, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember_children(self) -> list[Any]:
        """Note every descendant alive now (they are checked after the flow process is gone)."""
        import psutil

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


def _alive(p: Any) -> bool:
    import psutil

    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: Any) -> list[str]:
    try:
        return list(p.cmdline())
    except Exception:
        return ["?"]


@pytest.fixture
def flow_process(tmp_path: Path) -> Iterator[Callable[..., FlowProcess]]:
    """Start flow scripts: ``start(source, **env) -> FlowProcess``; all stopped by pid afterwards."""
    pytest.importorskip("psutil", reason="psutil is in the test extra; install taskyard[test]")
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
