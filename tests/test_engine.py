"""The engine: retries, time limits, hooks and logging, for tasks and flows."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from taskyard import exponential_backoff, flow, get_run_logger, task
from taskyard.engine import retry_delay
from taskyard.exceptions import TaskTimeoutError
from taskyard.runners import SequentialTaskRunner, ThreadPoolTaskRunner


class _Policy:
    def __init__(self, delay: Any, jitter: float | None = None) -> None:
        self.retries = 5
        self.retry_delay_seconds = delay
        self.retry_jitter_factor = jitter


class TestRetryDelays:
    def test_number_and_list(self) -> None:
        """A number repeats, a list is per retry (the last repeats)."""
        assert [retry_delay(_Policy(2), i) for i in range(3)] == [2, 2, 2]
        assert [retry_delay(_Policy([1, 5]), i) for i in range(3)] == [1, 5, 5]

    def test_exponential_backoff_gives_the_list_of_delays(self) -> None:
        """exponential_backoff(f) takes the number of retries and returns the delays, as in Prefect."""
        assert exponential_backoff(10)(3) == [10, 20, 40]
        assert exponential_backoff(0.1)(0) == []

    def test_a_callable_delay_is_called_with_the_retries_at_definition(self) -> None:
        """A callable retry_delay_seconds gets the number of retries once, when the task is defined."""
        calls: list[int] = []

        def delays(retries: int) -> list[float]:
            calls.append(retries)
            return [0.5] * retries

        t = task(retries=2, retry_delay_seconds=delays)(lambda: None)
        assert calls == [2] and t.retry_delay_seconds == [0.5, 0.5]
        assert t.with_options(retries=4).retry_delay_seconds == [0.5] * 4
        assert task(retries=3, retry_delay_seconds=exponential_backoff(10))(lambda: None).retry_delay_seconds == [10, 20, 40]

    def test_a_callable_delay_returning_no_list_is_refused(self) -> None:
        """A callable retry_delay_seconds returning something other than delays fails at definition."""
        with pytest.raises(TypeError, match="list of delays"):
            task(retries=2, retry_delay_seconds=lambda n: "soon")(lambda: None)

    def test_jitter_stays_within_the_factor(self) -> None:
        """Jittered delays stay within ±factor of the base delay and are not all equal."""
        delays = {retry_delay(_Policy(1.0, jitter=0.5), 0) for _ in range(50)}
        assert all(0.5 <= d <= 1.5 for d in delays) and len(delays) > 1


class TestTimeouts:
    def test_direct_call_in_the_main_thread_is_interrupted(self) -> None:
        """A direct call in the main thread is stopped by SIGALRM, even in time.sleep."""

        @task(timeout_seconds=0.2)
        def sleeps() -> None:
            time.sleep(10)

        started = time.monotonic()
        state = sleeps(return_state=True)
        assert state.name == "TimedOut" and isinstance(state.result(raise_on_failure=False), TaskTimeoutError)
        assert time.monotonic() - started < 5

    def test_pure_python_in_a_thread_is_stopped(self) -> None:
        """On a thread runner, a Python loop over its limit is stopped, not left spinning."""
        progress = [0]

        @task(timeout_seconds=0.2)
        def spins() -> None:
            while True:
                progress[0] += 1

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
        def f() -> str:
            future = spins.submit()
            future.wait()
            return future.state.name

        assert f() == "TimedOut"
        seen = progress[0]
        time.sleep(0.2)
        assert progress[0] == seen, "the runaway loop kept running"

    def test_async_task_is_cancelled(self) -> None:
        """An async task over its limit is cancelled."""
        cancelled = threading.Event()

        @task(timeout_seconds=0.1)
        async def waits() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        @flow
        def f() -> str:
            future = waits.submit()
            future.wait()
            return future.state.name

        assert f() == "TimedOut" and cancelled.wait(5)

    def test_flow_timeout(self) -> None:
        """A flow over its timeout_seconds ends TimedOut and raises TaskTimeoutError when called."""

        @flow(timeout_seconds=0.2, task_runner=SequentialTaskRunner())
        def slow() -> None:
            time.sleep(5)

        assert slow(return_state=True).name == "TimedOut"
        with pytest.raises(TimeoutError):
            slow()

    def test_timeout_counts_as_a_failed_attempt_for_retries(self) -> None:
        """A timed-out attempt is retried like a failure."""
        attempts = []

        @task(timeout_seconds=0.2, retries=1)
        def slow_then_fast() -> int:
            attempts.append(1)
            if len(attempts) == 1:
                time.sleep(2)
            return len(attempts)

        assert slow_then_fast() == 2


class TestFlowRetriesAndHooks:
    def test_flow_retries_rerun_the_body(self) -> None:
        """@flow(retries=N) runs the body again after a failure."""
        bodies = []

        @flow(retries=2, retry_delay_seconds=0)
        def sometimes() -> int:
            bodies.append(1)
            if len(bodies) < 3:
                raise RuntimeError("not yet")
            return len(bodies)

        state = sometimes(return_state=True)
        assert state.result() == 3 and state.run_count == 3

    def test_flow_hooks(self) -> None:
        """on_running, on_completion and on_failure get (flow, flow_run, state)."""
        calls: list[tuple[str, str, str]] = []

        def record(kind: str) -> Any:
            return lambda f, run, state: calls.append((kind, f.name, state.type.value))

        @flow(on_running=record("running"), on_completion=record("completion"), on_failure=[record("failure")])
        def maybe(fail: bool) -> None:
            if fail:
                raise ValueError("x")

        maybe(False)
        maybe(True, return_state=True)
        assert calls == [
            ("running", "maybe", "RUNNING"),
            ("completion", "maybe", "COMPLETED"),
            ("running", "maybe", "RUNNING"),
            ("failure", "maybe", "FAILED"),
        ]

    def test_ctrl_c_cancels_and_calls_on_cancellation(self) -> None:
        """A KeyboardInterrupt in a flow cancels its pending work, runs on_cancellation and propagates."""
        seen: list[str] = []
        futures: list[Any] = []
        gate = threading.Event()

        @task
        def blocked(i: int) -> None:
            gate.wait(10)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=1), on_cancellation=lambda f, r, s: seen.append(s.name))
        def interrupted() -> None:
            futures.extend(blocked.map(range(5)))
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        gate.set()
        assert seen == ["Cancelled"]
        assert all(f.state.is_cancelled() for f in futures)


class TestLogging:
    def test_run_logger_records_carry_run_names(self, caplog: pytest.LogCaptureFixture) -> None:
        """get_run_logger() records have the run names as attributes, and the message as logged."""

        @task(task_run_name="the-task")
        def log_it() -> None:
            get_run_logger().info("inside")

        @flow(flow_run_name="the-flow")
        def f() -> None:
            log_it.submit()

        with caplog.at_level(logging.INFO):
            f()
        record = next(r for r in caplog.records if "inside" in r.getMessage())
        assert record.getMessage() == "inside"
        assert record.task_run_name == "the-task" and record.flow_run_name == "the-flow"  # type: ignore[attr-defined]

    def test_flow_log_prints(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
        """A flow's log_prints redirects print in its body and its tasks; prints elsewhere are untouched."""

        @task
        def says() -> None:
            print("from the task")

        @flow(log_prints=True)
        def f() -> None:
            print("from the flow")
            says.submit()

        with caplog.at_level(logging.INFO):
            f()
        print("outside")
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.endswith("from the flow") for m in messages)
        assert any(m.endswith("from the task") for m in messages)
        assert "outside" in capsys.readouterr().out


class TestRetryingState:
    def test_each_retry_enters_retrying(self, caplog: pytest.LogCaptureFixture) -> None:
        """A retried run passes through a Retrying state (logged) before its final state."""
        attempts = []

        @task(retries=2, task_run_name="flaky-run")
        def flaky() -> int:
            attempts.append(1)
            if len(attempts) < 3:
                raise ValueError("again")
            return len(attempts)

        with caplog.at_level(logging.INFO, logger="taskyard"):
            state = flaky(return_state=True)
        retrying = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
        assert state.run_count == 3 and len(retrying) == 2
        assert retrying[0].getMessage() == "Retrying in 0 s (attempt 2 of 3) after: ValueError: again"
        assert getattr(retrying[0], "task_run_name", None) == "flaky-run"
