"""Dependency handling: no blocked workers, long chains, concurrency limits."""

from __future__ import annotations

import threading
import time

from taskyard import flow, task, tags
from taskyard.runners import ThreadPoolTaskRunner


@task
def inc(x: int) -> int:
    return x + 1


class TestDependencies:
    def test_a_10000_long_chain_on_one_worker_completes(self) -> None:
        """Dependent runs start on upstream completion, so one worker runs a 10k chain."""

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
        def f() -> int:
            future = inc.submit(0)
            for _ in range(9_999):
                future = inc.submit(future)
            return future.result()

        assert f() == 10_000

    def test_upstream_submitted_later_does_not_block_the_pool(self) -> None:
        """With one worker, a run waiting on a slow upstream leaves the worker free."""
        gate = threading.Event()

        @task
        def wait_gate() -> int:
            gate.wait(10)
            return 1

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
        def f() -> list[int]:
            slow = wait_gate.submit()
            dependents = [inc.submit(slow) for _ in range(5)]
            independent = inc.map(range(20)).result()  # must finish while `slow` waits
            gate.set()
            return independent + [d.result() for d in dependents]

        assert f() == list(range(1, 21)) + [2] * 5


class _InFlight:
    """Counts calls running at once and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def run(self, x: int) -> int:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.002)
        with self.lock:
            self.now -= 1
        return x


class TestConcurrencyLimits:
    def test_task_max_concurrency_caps_runs_in_flight(self) -> None:
        """@task(max_concurrency=N) never has more than N runs of it running."""
        in_flight = _InFlight()

        @task(max_concurrency=3)
        def tracked(x: int) -> int:
            return in_flight.run(x)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
        def f() -> list[int]:
            return tracked.map(range(300)).result()

        assert f() == list(range(300))
        assert in_flight.peak == 3

    def test_tag_concurrency_caps_runs_carrying_the_tag(self) -> None:
        """@flow(tag_concurrency={"db": 2}) caps tagged runs across tasks."""
        in_flight = _InFlight()

        @task(tags=["db"])
        def query(x: int) -> int:
            return in_flight.run(x)

        @task
        def other(x: int) -> int:
            return query.fn(x)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=8), tag_concurrency={"db": 2})
        def f() -> int:
            a = query.map(range(100))
            with tags("db"):
                b = other.map(range(100))
            return len(a.result() + b.result())

        assert f() == 200
        assert in_flight.peak == 2

    def test_a_run_under_two_limits_is_never_stranded(self) -> None:
        """A run waiting on two limits starts once both free, in whichever order they free."""

        @task(max_concurrency=1)
        def limited(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        @task(tags=["db"])
        def hold_db(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4), tag_concurrency={"db": 1})
        def f() -> list[float]:
            db = hold_db.submit(0.2)  # the db slot is taken
            with tags("db"):
                both = limited.submit(0.0)  # waits: needs the task slot and the db slot
            task_slot = limited.submit(0.4)  # takes the task slot; the db slot frees first
            return [db.result(timeout=10), task_slot.result(timeout=10), both.result(timeout=10)]

        assert f() == [0.2, 0.4, 0.0]
