"""A worker process that dies costs exactly the run it was running on the process runner."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from taskyard import flow, task
from taskyard.runners import ProcessPoolTaskRunner


@task
def logged(x: int, folder: str, seconds: float) -> int:
    """Leave a start and an end mark per execution: `start-<x>-<pid>-<n>`, `end-<x>-<pid>-<n>`."""
    mark = f"{x}-{os.getpid()}-{time.monotonic_ns()}"
    Path(folder, f"start-{mark}").touch()
    time.sleep(seconds)
    Path(folder, f"end-{mark}").touch()
    return os.getpid()


def _marks(folder: Path, kind: str) -> list[tuple[int, int]]:
    found = [p.name.split("-") for p in folder.glob(f"{kind}-*")]
    return [(int(x), int(pid)) for _, x, pid, _ in found]


def _kill_a_worker_mid_call(folder: Path, after: int) -> tuple[int, int]:
    """Wait until call number ``after`` or later has started, SIGKILL its worker; (x, pid) of it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = {x: pid for x, pid in _marks(folder, "start") if x >= after}
        ended = {x for x, _ in _marks(folder, "end")}
        running = [(x, pid) for x, pid in started.items() if x not in ended]
        if running:
            x, pid = min(running)
            os.kill(pid, signal.SIGKILL)
            return x, pid
        time.sleep(0.02)
    raise AssertionError("no call started")


class TestWorkerKilledMidMap:
    def test_exactly_the_running_call_crashes_and_nothing_runs_twice(self, tmp_path: Path) -> None:
        """SIGKILL on one worker mid-map: its running call ends Crashed, every other call runs exactly once."""
        outcome: dict[str, Any] = {}

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> None:
            futures = logged.map(range(30), str(tmp_path), 0.2)
            outcome["victim"] = _kill_a_worker_mid_call(tmp_path, after=4)
            futures.wait(120)
            outcome["states"] = [fut.state for fut in futures]

        f()
        victim_x, victim_pid = outcome["victim"]
        states = outcome["states"]
        assert Counter(s.name for s in states) == Counter({"Completed": 29, "Crashed": 1})
        assert states[victim_x].is_crashed() and "killed by SIGKILL" in str(states[victim_x].message)
        assert "while running" in str(states[victim_x].message)
        runs = Counter(x for x, _ in _marks(tmp_path, "start"))
        assert runs == Counter(range(30)), "a call ran twice or not at all"

    def test_the_rest_of_the_map_keeps_every_worker(self, tmp_path: Path) -> None:
        """After a worker is killed, a fresh one takes its place: later calls run on two processes at once."""
        outcome: dict[str, Any] = {}

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> None:
            futures = logged.map(range(24), str(tmp_path), 0.2)
            outcome["victim"] = _kill_a_worker_mid_call(tmp_path, after=2)
            futures.wait(120)

        f()
        _, victim_pid = outcome["victim"]
        starts = sorted((p.stat().st_mtime_ns, p.name) for p in tmp_path.glob("start-*"))
        later_pids = {int(name.split("-")[2]) for _, name in starts[-8:]}
        assert victim_pid not in later_pids and len(later_pids) == 2

    def test_a_queued_call_on_the_killed_worker_is_placed_again(self, tmp_path: Path) -> None:
        """Calls that were sent to the killed worker but had not started run elsewhere, once, and complete."""
        outcome: dict[str, Any] = {}

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def f() -> None:
            # One worker holds two batches of 2: the kill loses one running call and
            # three that never started.
            futures = logged.map(range(8), str(tmp_path), 0.3)
            outcome["victim"] = _kill_a_worker_mid_call(tmp_path, after=0)
            futures.wait(120)
            outcome["states"] = [fut.state.name for fut in futures]

        f()
        victim_x, _ = outcome["victim"]
        assert outcome["states"] == ["Crashed" if i == victim_x else "Completed" for i in range(8)]
        assert Counter(x for x, _ in _marks(tmp_path, "start")) == Counter(range(8))


@task(retries=2)
def kills_its_worker(x: int, folder: str) -> int:
    Path(folder, f"start-{x}-{os.getpid()}-{time.monotonic_ns()}").touch()
    if x == 5:
        os._exit(7)
    return x


class KillsWhenLoaded:
    """An argument whose unpickling ends the worker process before any call starts."""

    def __reduce__(self) -> Any:
        return (os._exit, (9,))


@task
def takes(x: Any) -> int:
    return 1


class TestCulprits:
    def test_a_call_that_kills_every_worker_is_retried_then_crashed_alone(self, tmp_path: Path) -> None:
        """A call that kills its worker uses its retries, then ends Crashed; the others run once each."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[Any]:
            futures = kills_its_worker.map(range(40), str(tmp_path))
            futures.wait(120)
            return [(fut.state.name, fut.state.run_count, fut.state.message) for fut in futures]

        states = f()
        assert [name for name, _, _ in states] == ["Crashed" if i == 5 else "Completed" for i in range(40)]
        assert states[5][1] == 3 and "exit code 7" in str(states[5][2])
        runs = Counter(x for x, _ in _marks(tmp_path, "start"))
        assert runs == Counter({**dict.fromkeys(range(40), 1), 5: 3})

    def test_an_argument_that_kills_the_worker_while_loading_crashes_alone(self) -> None:
        """A call whose argument ends the worker as it is unpickled ends Crashed; the rest complete."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[Any]:
            items: list[Any] = list(range(40))
            items[7] = KillsWhenLoaded()
            futures = takes.map(items)
            futures.wait(120)
            return [(fut.state.name, fut.state.message) for fut in futures]

        states = f()
        assert [name for name, _ in states] == ["Crashed" if i == 7 else "Completed" for i in range(40)]
        assert "before it started" in str(states[7][1])
