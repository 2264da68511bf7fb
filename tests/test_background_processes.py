"""Deferred runs, task workers and served flows across real processes (the issue's must-shows)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskyard.runs import list_flow_runs, start_flow_run, wait_for_flow_run

TASKS = '''
import os
import time
from pathlib import Path
from typing import Any

from taskyard import task

OUT = Path(os.environ["SIDE_EFFECTS"])


def note(text):
    with open(OUT, "a") as fh:  # one short O_APPEND write per line: lines never interleave
        fh.write(f"{text} {os.getpid()}\\n")


@task
def record(i: int) -> int:
    note(i)
    return 2 * i


@task(retries=1)
def slow_retried(marker: str) -> str:
    note(f"start-{marker}")
    time.sleep(3)
    note(f"end-{marker}")
    return marker


@task
def slow_once(marker: str) -> str:
    note(f"start-{marker}")
    time.sleep(3)
    return marker
'''

PRODUCER = '''
from bgtasks import record

futures = record.map(range(1000), deferred=True)
print("enqueued", len(futures), flush=True)
results = futures.result(timeout=150)
assert results == [2 * i for i in range(1000)], results[:10]
print("all results read", len(results), flush=True)
'''

SERVED = '''
import os
import sys
import time

from taskyard import flow

OUT = os.environ["SIDE_EFFECTS"]


@flow
def tick(label: str, seconds: float = 0.1) -> str:
    start = time.time()
    time.sleep(seconds)
    with open(OUT, "a") as fh:
        fh.write(f"{label} {start} {time.time()}\\n")
    return label


if __name__ == "__main__":
    seconds = float(sys.argv[1])
    tick.serve("every-second", interval=1, limit=1, parameters={"label": "tick", "seconds": seconds})
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "bgtasks.py").write_text(TASKS)
    (tmp_path / "producer.py").write_text(PRODUCER)
    (tmp_path / "served.py").write_text(SERVED)
    (tmp_path / "side-effects.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SIDE_EFFECTS", str(tmp_path / "side-effects.txt"))
    return tmp_path


class Processes:
    """The processes a test starts, each stopped (by pid) when the test ends."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python ARGS`` here; its output goes to files (``output(proc)``), so no pipe ever fills."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.where), *sys.path])}
        n = len(self.started)
        with open(self.where / f"out-{n}.txt", "w") as out, open(self.where / f"err-{n}.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, *args], cwd=self.where, env=env, stdout=out, stderr=err, text=True)
        self.started.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        n = self.started.index(proc)
        return (self.where / f"out-{n}.txt").read_text(), (self.where / f"err-{n}.txt").read_text()

    def stop(self, proc: subprocess.Popen[str], how: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        """Send ``how`` (SIGTERM), then give the exit code and standard error."""
        proc.send_signal(how)
        proc.wait(timeout=timeout)
        return proc.returncode, self.output(proc)[1]

    def worker(self, *refs: str, limit: int = 8) -> subprocess.Popen[str]:
        return self.start("-m", "taskyard", "worker", *refs, "--limit", str(limit))

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def procs(workdir: Path) -> Iterator[Processes]:
    running = Processes(workdir)
    try:
        yield running
    finally:
        running.stop_all()


def side_effects(workdir: Path) -> list[tuple[str, int]]:
    lines = (workdir / "side-effects.txt").read_text().splitlines()
    return [(text, int(pid)) for text, pid in (line.rsplit(" ", 1) for line in lines)]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class TestTwoWorkersDrainAQueue:
    def test_a_thousand_runs_each_run_once_and_read_by_the_producer(self, procs: Processes, workdir: Path) -> None:
        """Two worker processes drain 1,000 runs a third enqueued: each ran exactly once, every result reads back; SIGTERM and Ctrl-C stop them."""
        workers = [procs.worker("bgtasks:record"), procs.worker("bgtasks:record")]
        producer = procs.start("producer.py")
        producer.wait(timeout=180)
        out, err = procs.output(producer)
        assert producer.returncode == 0, err
        assert "all results read 1000" in out
        done = side_effects(workdir)
        counts = Counter(int(text) for text, _ in done)
        assert sorted(counts) == list(range(1000)) and set(counts.values()) == {1}
        assert {pid for _, pid in done} <= {w.pid for w in workers}
        code, err = procs.stop(workers[0])
        assert code == -signal.SIGTERM, err
        assert "task worker stopped: the process received SIGTERM" in err and "Traceback" not in err
        code, err = procs.stop(workers[1], signal.SIGINT)  # Ctrl-C
        assert code == 130, err
        assert "interrupted: task worker stopped" in err and "Traceback" not in err


class TestLostWorker:
    def _killed_mid_run(self, procs: Processes, workdir: Path, task: str) -> tuple[Any, int, subprocess.Popen[str]]:
        from bgtasks import slow_once, slow_retried  # type: ignore[import-not-found]

        workers = {w.pid: w for w in (procs.worker(f"bgtasks:{task}", limit=1), procs.worker(f"bgtasks:{task}", limit=1))}
        future = (slow_retried if task == "slow_retried" else slow_once).delay("a")
        wait_until(lambda: side_effects(workdir), 60, "a worker starts the run")
        (_, victim), = side_effects(workdir)
        os.kill(victim, signal.SIGKILL)
        workers[victim].wait(timeout=30)
        (other,) = (w for pid, w in workers.items() if pid != victim)
        return future, victim, other

    def test_a_killed_workers_run_is_run_again_by_the_other_with_retries(self, procs: Processes, workdir: Path) -> None:
        """SIGKILL a worker mid-run: the other worker runs it again (retries=1), and it completes."""
        future, victim, other = self._killed_mid_run(procs, workdir, "slow_retried")
        killed_at = time.monotonic()
        assert future.result(timeout=60) == "a"
        texts = side_effects(workdir)
        assert [t for t, _ in texts] == ["start-a", "start-a", "end-a"]
        assert texts[1][1] == texts[2][1] == other.pid != victim
        assert future.state.run_count == 2
        # Noticed within about a second (a dead pid on this machine), then run for 3 s.
        assert time.monotonic() - killed_at < 3 + 10

    def test_without_retries_a_killed_workers_run_ends_crashed(self, procs: Processes, workdir: Path) -> None:
        """SIGKILL a worker mid-run of a task without retries: the run ends Crashed, within seconds, and runs no more."""
        future, victim, _ = self._killed_mid_run(procs, workdir, "slow_once")
        future.wait(timeout=15)
        assert future.done(), "the lost run was not marked within 15 s"
        state = future.state
        assert state.is_crashed() and f"pid {victim}" in (state.message or "")
        assert [t for t, _ in side_effects(workdir)] == ["start-a"]


class TestServedFlow:
    def _serve(self, procs: Processes, workdir: Path, seconds: float, how_long: float) -> list[tuple[float, float]]:
        server = procs.start("served.py", str(seconds))
        time.sleep(how_long)
        code, err = procs.stop(server)
        assert code == -signal.SIGTERM, err
        assert "flow server stopped: the process received SIGTERM" in err and "Traceback" not in err
        spans = []
        for line in (workdir / "side-effects.txt").read_text().splitlines():
            _, start, end = line.split()
            spans.append((float(start), float(end)))
        return spans

    def test_interval_one_gives_a_run_each_second_and_sigterm_stops_cleanly(self, procs: Processes, workdir: Path) -> None:
        """Served with interval=1 for ~6 s: about one run per second, each recorded with its deployment; SIGTERM leaves none running."""
        spans = self._serve(procs, workdir, 0.1, 6.5)
        runs = list_flow_runs(deployment="tick/every-second")
        assert 4 <= len(runs) <= 7, runs  # the first second goes to starting Python
        assert len(spans) == len(runs)
        assert all(r.state.is_completed() and r.deployment == "tick/every-second" for r in runs)
        slots = sorted(r.scheduled_start_time.timestamp() for r in runs)  # type: ignore[union-attr]
        assert all(abs((b - a) - 1.0) < 1e-6 for a, b in zip(slots, slots[1:], strict=False))

    def test_limit_one_never_overlaps_runs(self, procs: Processes, workdir: Path) -> None:
        """Runs that take 1.5 s on a 1 s interval with limit=1 never overlap: the slots that come meanwhile are skipped."""
        spans = sorted(self._serve(procs, workdir, 1.5, 6.5))
        assert len(spans) >= 2
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False))
        runs = list_flow_runs(deployment="tick/every-second")
        assert all(r.state.is_final() for r in runs) and len(runs) == len(spans)

    def test_start_flow_run_by_deployment_name_runs_in_the_server(self, procs: Processes, workdir: Path) -> None:
        """start_flow_run("flow/deployment") records a run the serving process starts, with the deployment's defaults."""
        server = procs.start("served.py", "0.1")
        wait_until(lambda: list_flow_runs(deployment="tick/every-second"), 60, "the server starts")
        run_id = start_flow_run("tick/every-second", {"label": "by-name"})
        run = wait_for_flow_run(run_id, timeout=60)
        assert run.state.is_completed() and run.deployment == "tick/every-second"
        assert run.parameters == {"label": "by-name", "seconds": 0.1}
        assert any(line.startswith("by-name ") for line in (workdir / "side-effects.txt").read_text().splitlines())
        procs.stop(server)
        done = subprocess.run(
            [sys.executable, "-m", "taskyard", "runs", "ls", "--deployment", "tick/every-second"],
            capture_output=True, text=True, check=True, cwd=workdir,
        )  # fmt: skip
        assert "DEPLOYMENT" in done.stdout and done.stdout.count("tick/every-second") >= 2
        assert textwrap.dedent(done.stdout).splitlines()[1:]  # one row per run
