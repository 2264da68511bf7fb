"""Dependency handling: no blocked workers, long chains, concurrency limits, resource capacities."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from taskyard import flow, tags, task, wait
from taskyard.exceptions import UnsatisfiableResourcesError
from taskyard.runners import ProcessPoolTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner


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


class _Usage:
    """Sums the amount of a resource held by running calls and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0.0
        self.peak = 0.0
        self.order: list[str] = []

    def hold(self, amount: float, label: str = "", seconds: float = 0.002) -> str:
        with self.lock:
            self.now += amount
            self.peak = max(self.peak, self.now)
            self.order.append(label)
        time.sleep(seconds)
        with self.lock:
            self.now -= amount
        return label


class TestResourceCapacity:
    def test_a_capacity_caps_the_requests_in_flight(self) -> None:
        """With gpu=2 declared, at most two runs asking for gpu=1 run at once on 8 threads."""
        usage = _Usage()

        @task(resources={"gpu": 1})
        def on_gpu(x: int) -> int:
            usage.hold(1)
            return x

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=8, resources={"gpu": 2}))
        def f() -> list[int]:
            return on_gpu.map(range(200)).result()

        assert f() == list(range(200))
        assert usage.peak == 2

    def test_fractions_and_memory_are_summed(self) -> None:
        """Requests are amounts: gpu=0.5 fits twice in gpu=1, 400 MiB twice in 1 GiB."""
        gpu, memory = _Usage(), _Usage()

        @task(resources={"gpu": 0.5})
        def half(x: int) -> int:
            gpu.hold(0.5)
            return x

        @task(resources={"memory": "400 MiB"})
        def big(x: int) -> int:
            memory.hold(400)
            return x

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=8, resources={"gpu": 1, "memory": "1 GiB"}))
        def f() -> int:
            return len(half.map(range(100)).result() + big.map(range(100)).result())

        assert f() == 200
        assert gpu.peak == 1.0 and memory.peak == 800

    def test_cpu_defaults_to_the_worker_count(self) -> None:
        """Without a declared cpu, the capacity is the worker count: cpu=2 runs one at a time on 3 workers."""
        usage = _Usage()

        @task(resources={"cpu": 2})
        def two_cores(x: int) -> int:
            usage.hold(2)
            return x

        runner = ThreadPoolTaskRunner(max_workers=3)
        assert runner.resource_capacity()["cpu"] == 3.0

        @flow(task_runner=runner)
        def f() -> list[int]:
            return two_cores.map(range(20)).result()

        assert f() == list(range(20))
        assert usage.peak == 2

    def test_mixed_amounts_stay_within_capacity_and_a_large_request_is_not_overtaken(self) -> None:
        """A gpu=2 run queued behind gpu=1 runs starts before gpu=1 runs submitted after it."""
        usage = _Usage()

        @task(resources={"gpu": 1})
        def small(label: str) -> str:
            return usage.hold(1, label, 0.05)

        @task(resources={"gpu": 2})
        def large(label: str) -> str:
            return usage.hold(2, label, 0.05)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4, resources={"gpu": 2}))
        def f() -> None:
            first = small.submit("first")
            big = large.submit("large")
            later = small.map([f"later-{i}" for i in range(6)])
            first.wait()
            big.wait()
            later.wait()

        f()
        assert usage.peak == 2
        assert usage.order[:2] == ["first", "large"]

    def test_a_run_without_a_request_is_not_held_by_a_full_capacity(self) -> None:
        """Runs that ask for nothing run while every gpu is taken."""
        release = threading.Event()

        @task(resources={"gpu": 1})
        def hog() -> bool:
            return release.wait(10)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4, resources={"gpu": 1}))
        def f() -> tuple[list[int], bool]:
            held = hog.submit()
            plain = inc.map(range(10)).result(timeout=10)
            release.set()
            return plain, held.result(timeout=10)

        assert f() == (list(range(1, 11)), True)

    def test_a_run_held_by_a_resource_and_two_limits_is_never_stranded(self) -> None:
        """A run needing a gpu, a task slot and a tag slot starts once all three free, in any order."""

        @task(resources={"gpu": 1})
        def hold_gpu(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        @task(max_concurrency=1, resources={"gpu": 1})
        def limited(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        @task(tags=["db"])
        def hold_db(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        runner = ThreadPoolTaskRunner(max_workers=6, resources={"gpu": 2})

        @flow(task_runner=runner, tag_concurrency={"db": 1})
        def f() -> list[float]:
            db = hold_db.submit(0.1)  # the db slot is taken
            gpu = hold_gpu.submit(0.3)  # one gpu of two is taken
            task_slot = limited.submit(0.2)  # the task slot and the second gpu are taken
            with tags("db"):
                every = limited.submit(0.0)  # waits for db, then the task slot, then a gpu
            return [x.result(timeout=20) for x in (db, gpu, task_slot, every)]

        assert f() == [0.1, 0.3, 0.2, 0.0]


class TestUnsatisfiableRequests:
    @pytest.mark.parametrize(
        ("resources", "shown"),
        [
            ({"gpu": 2}, "asks for gpu=2 but the runner (ThreadPoolTaskRunner) has gpu=1"),
            ({"tpu": 1}, "asks for tpu=1 but the runner (ThreadPoolTaskRunner) has no 'tpu'"),
            ({"cpu": 5}, "asks for cpu=5 but the runner (ThreadPoolTaskRunner) has cpu=4"),
            ({"memory": "1 PiB"}, "asks for memory=1024 TiB but the runner (ThreadPoolTaskRunner) has memory="),
        ],
    )
    def test_a_request_over_capacity_fails_at_once_naming_it(self, resources: dict[str, Any], shown: str) -> None:
        """A submitted or mapped run asking for more than the runner has ends Failed at once, never queued."""

        @task(resources=resources)
        def greedy(x: int) -> int:
            return x

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4, resources={"gpu": 1}))
        def f() -> list[tuple[bool, bool, str, BaseException | None]]:
            futures = [greedy.submit(0), *greedy.map(range(3))]
            done_at_once = [future.done() for future in futures]
            states = [future.state for future in futures]
            return [(d, s.is_failed(), s.message or "", s.exception()) for d, s in zip(done_at_once, states, strict=True)]

        for done_at_once, failed, message, exc in f():
            assert done_at_once and failed and shown in message
            assert isinstance(exc, UnsatisfiableResourcesError) and "cannot run" in str(exc)

    def test_the_sequential_runner_has_one_cpu(self) -> None:
        """The sequential runner's cpu is 1 unless declared: cpu=2 fails there, and runs once declared."""

        @task(resources={"cpu": 2})
        def two(x: int) -> int:
            return x

        @flow
        def f() -> str:
            return two.submit(1).state.name + (two.submit(1).state.message or "")

        assert "Failed" in f.with_options(task_runner=SequentialTaskRunner())()
        assert "has cpu=1" in f.with_options(task_runner=SequentialTaskRunner())()
        assert f.with_options(task_runner=SequentialTaskRunner(resources={"cpu": 2}))() == "Completed"

    def test_a_runner_that_places_requests_itself_gets_them_untouched(self) -> None:
        """When resource_capacity() is None the dispatcher neither refuses nor holds back requests."""
        usage = _Usage()

        class Placing(ThreadPoolTaskRunner):
            def resource_capacity(self) -> None:
                return None

        @task(resources={"gpu": 8})
        def anywhere(x: int) -> int:
            usage.hold(8, seconds=0.05)
            return x

        @flow(task_runner=Placing(max_workers=4))
        def f() -> list[int]:
            return anywhere.map(range(8)).result()

        assert f() == list(range(8))
        assert usage.peak > 8

    def test_capacities_survive_duplicate(self) -> None:
        """A subflow's copy of the runner has the same capacities."""
        for runner in (
            SequentialTaskRunner(resources={"gpu": 1}),
            ThreadPoolTaskRunner(2, resources={"gpu": 1}),
            ProcessPoolTaskRunner(2, resources={"gpu": 1}),
        ):
            assert runner.duplicate().resource_capacity() == runner.resource_capacity()
            assert runner.resource_capacity()["gpu"] == 1.0

    def test_a_bad_capacity_fails_in_the_constructor(self) -> None:
        """A bad capacity fails where the runner is made, naming its resources argument."""
        with pytest.raises(ValueError, match=r"the runner's resources\['memory'\]"):
            ThreadPoolTaskRunner(resources={"memory": "lots"})


class TestLimitsTogether:
    def test_seeded_random_mixes_of_limits_and_requests_all_finish_within_every_limit(self) -> None:
        """Random mixes of max_concurrency, tag limits and resource requests all finish, never over a limit."""
        rng = random.Random(8)
        lock = threading.Lock()
        now: Counter[str] = Counter()
        peak: Counter[str] = Counter()

        def work(holds: dict[str, float], seconds: float) -> None:
            with lock:
                now.update(holds)
                for key in holds:
                    peak[key] = max(peak[key], now[key])
            time.sleep(seconds)
            with lock:
                now.subtract(holds)

        @task
        def step(holds: dict[str, float], seconds: float) -> None:
            work(holds, seconds)

        variants = []
        for i in range(6):
            gpu = rng.choice([0, 0.5, 1, 2])
            limit = rng.choice([None, 1, 2])
            tagged = rng.sample(["a", "b"], rng.randint(0, 2))
            holds = {"gpu": float(gpu), f"task-{i}": 1.0, **{f"tag-{t}": 1.0 for t in tagged}}
            options: dict[str, Any] = {"name": f"step-{i}", "max_concurrency": limit, "tags": tagged}
            if gpu:
                options["resources"] = {"gpu": gpu}
            variants.append((step.with_options(**options), holds, limit))

        runner = ThreadPoolTaskRunner(max_workers=6, resources={"gpu": 2})

        @flow(task_runner=runner, tag_concurrency={"a": 2, "b": 1})
        def f() -> int:
            futures = []
            for _ in range(300):
                variant, holds, _ = rng.choice(variants)
                futures.append(variant.submit(holds, rng.random() / 500))
            done, not_done = wait(futures, timeout=120)
            assert not not_done, f"{len(not_done)} runs were stranded"
            return sum(x.state.is_completed() for x in futures)

        assert f() == 300
        assert peak["gpu"] <= 2 and peak["tag-a"] <= 2 and peak["tag-b"] <= 1
        for i, (_, _, limit) in enumerate(variants):
            assert limit is None or peak[f"task-{i}"] <= limit


class TestMapAssembly:
    def test_a_map_of_ready_and_waiting_calls_keeps_its_order(self) -> None:
        """Calls that wait for upstreams take their own places among the calls that went to the runner at once."""
        release = threading.Event()

        @task
        def held(x: int) -> int:
            release.wait(10)
            return x

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
        def f() -> list[int]:
            first, second = held.submit(100), held.submit(300)
            futures = inc.map([0, first, 1, 2, second, 3])
            at_once = [future.done() for future in futures]
            release.set()
            values = futures.result()
            assert at_once[1] is False and at_once[4] is False
            return values

        assert f() == [1, 101, 2, 3, 301, 4]

    def test_runs_share_one_empty_parameters_dict_until_they_start(self) -> None:
        """A run not started yet has no dict of its own (a map of a million would make a million); a started one has its arguments."""
        from taskyard import get_run_context
        from taskyard.context import TaskRunInfo

        first, second = TaskRunInfo("a", "a", "t"), TaskRunInfo("b", "b", "t")
        assert first.parameters == {} and first.parameters is second.parameters

        @task
        def seen(x: int) -> dict[str, Any]:
            return dict(get_run_context().task_run.parameters)  # type: ignore[union-attr]

        @flow
        def f() -> list[dict[str, Any]]:
            return seen.map(range(3)).result()

        assert f() == [{"x": 0}, {"x": 1}, {"x": 2}]
        assert first.parameters == {}  # no run wrote into the shared one
