"""taskyard.runs: starting, waiting for, reading, cancelling and renaming flow runs."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, task
from taskyard.exceptions import FlowRunError, MissingResultError, ParameterValidationError, RunNotFound
from taskyard.runs import (
    cancel_flow_run,
    get_task_run_result,
    list_flow_runs,
    read_flow_run,
    rename_flow_run,
    start_flow_run,
    wait_for_flow_run,
)
from taskyard.pids import pid_alive

HERE = Path(__file__).resolve().parent
WAIT = 120  # generous bounds: the machine may be busy; nothing here should take long


@task(persist_result=True)
def square(x: int) -> int:
    return x * x


@task
def unpersisted(x: int) -> int:
    return x + 1


@flow
def squares(n: int) -> int:
    futures = square.map(range(n))
    unpersisted.submit(1)
    return sum(futures.result())


@flow
def fails() -> None:
    raise ValueError("the child failed")


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _mark(marker: str) -> Any:
    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        Path(marker).write_text(state.name)

    return hook


@flow
def napping(n: int, seconds: float, marker: str) -> list[float]:
    return nap.with_options().map([seconds] * n).result()


def _napping_with_hook(marker: str, runner: str) -> Any:
    return napping.with_options(on_cancellation=[_mark(marker)], task_runner=runner)


def _wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


class TestStartFlowRun:
    def test_a_flow_object_runs_in_another_process_and_results_come_back(self) -> None:
        """A started run is recorded; its persisted task results read back, in map order."""
        run_id = start_flow_run(squares, {"n": 4}, run_name="four-squares", tags=["batch"])
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_completed() and run.name == "four-squares" and run.tags == ["batch"]
        with pytest.raises(MissingResultError):  # the flow's own result was not persisted
            run.state.result()
        assert get_task_run_result(run_id, "square") == [0, 1, 4, 9]
        assert get_task_run_result(run_id, "square", map_index=3) == 9
        with pytest.raises(MissingResultError, match="persist_result"):
            get_task_run_result(run_id, "unpersisted")
        with pytest.raises(RunNotFound, match="no task 'nope'"):
            get_task_run_result(run_id, "nope")

    def test_flows_by_reference_and_by_recorded_name(self) -> None:
        """'module:function' and 'file.py:function' start a flow; so does the name of one that ran before."""
        first = start_flow_run("test_runs:squares", {"n": 2})
        second = start_flow_run(f"{HERE / 'test_runs.py'}:squares", {"n": 3})
        third = start_flow_run("squares", {"n": 1})
        results = [wait_for_flow_run(r, timeout=WAIT) for r in (first, second, third)]
        assert [r.state.name for r in results] == ["Completed"] * 3
        assert [r.parameters for r in results] == [{"n": 2}, {"n": 3}, {"n": 1}]

    def test_bad_input_fails_at_the_call_and_starts_nothing(self) -> None:
        """An unknown flow or a bad parameter raises before any run is recorded."""
        with pytest.raises(RunNotFound, match="no flow named 'never_ran'"):
            start_flow_run("never_ran")
        with pytest.raises(ParameterValidationError, match="'n'"):
            start_flow_run(squares, {"n": "many"})
        with pytest.raises(TypeError):
            start_flow_run(squares, {"m": 1})
        with pytest.raises(LookupError):
            start_flow_run("no_such_module_here:flow")
        assert list_flow_runs() == []

    def test_wait_true_raises_carrying_the_final_state(self) -> None:
        """wait=True on a run that fails raises FlowRunError with the run's final State."""
        with pytest.raises(FlowRunError, match="the child failed") as caught:
            start_flow_run(fails, wait=True)
        assert caught.value.state.is_failed()  # type: ignore[attr-defined]
        assert read_flow_run(caught.value.flow_run_id).state.is_failed()

    def test_a_repeated_idempotency_key_returns_the_first_run(self) -> None:
        """The second start with the same key starts nothing and returns the first id."""
        first = start_flow_run(squares, {"n": 1}, idempotency_key="nightly-2026-12-01")
        again = start_flow_run(squares, {"n": 5}, idempotency_key="nightly-2026-12-01")
        assert again == first
        wait_for_flow_run(first, timeout=WAIT)
        assert len(list_flow_runs()) == 1

    def test_scheduled_run_waits_for_its_start_time(self) -> None:
        """A run scheduled in the future reads Scheduled, then starts no earlier than asked."""
        at = datetime.now() + timedelta(seconds=3)
        run_id = start_flow_run(squares, {"n": 1}, scheduled_start_time=at)
        assert read_flow_run(run_id).state.name == "Scheduled"
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_completed()
        assert run.start_time is not None and run.start_time.timestamp() >= at.timestamp()

    def test_a_cancelled_scheduled_run_never_starts(self) -> None:
        """Cancelling a Scheduled run ends it Cancelled; its process exits without running it."""
        run_id = start_flow_run(squares, {"n": 1}, scheduled_start_time=datetime.now() + timedelta(seconds=2))
        assert cancel_flow_run(run_id).state.is_cancelled()
        pid = _pid_of(run_id)
        _wait_until(lambda: not pid_alive(pid), "the scheduled run's process to exit")
        run = read_flow_run(run_id)
        assert run.state.is_cancelled() and run.task_runs == [] and run.start_time is None


def _pid_of(run_id: str) -> int:
    from taskyard.runs.reading import open_store

    conn = open_store()
    try:
        return int(conn.execute("SELECT pid FROM flow_runs WHERE id = ?", (run_id,)).fetchone()[0])
    finally:
        conn.close()


@task(retries=1)
def starts_a_child(n: int) -> str:
    run_id = start_flow_run(squares, {"n": n})
    if get_run_context().task_run.run_count == 1:  # type: ignore[union-attr]
        raise RuntimeError("fails after starting the child; the retry must not start another")
    return run_id


@flow
def starter(n: int) -> str:
    return starts_a_child(n)


@task
def run_child(n: int) -> int:
    run_id = start_flow_run(squares, {"n": n}, wait=True)
    return int(get_task_run_result(run_id, "square", map_index=n - 1))


@task
def run_failing_child() -> None:
    start_flow_run(fails, wait=True)


@flow
def flow_of_flows() -> list[int]:
    return run_child.map([2, 3]).result()


@flow
def fails_with_its_child() -> None:
    run_failing_child()


class TestFlowOfFlows:
    def test_a_retried_task_starts_its_child_flow_run_once(self) -> None:
        """Inside a task run the idempotency key comes from the task run: its retry reuses the child run."""
        child_id = starter(1)
        runs = [r for r in list_flow_runs() if r.flow_name == "squares"]
        assert [r.id for r in runs] == [child_id]
        (task_run,) = read_flow_run([r for r in list_flow_runs() if r.flow_name == "starter"][0].id).task_runs
        assert task_run.run_count == 2 and runs[0].parent_task_run_id == task_run.id
        assert wait_for_flow_run(child_id, timeout=WAIT).state.is_completed()

    def test_tasks_start_and_wait_for_child_flow_runs(self) -> None:
        """A flow of flows: each task starts a child run, waits, and reads its result."""
        assert flow_of_flows() == [1, 4]
        children = [r for r in list_flow_runs() if r.flow_name == "squares"]
        parent = [r for r in list_flow_runs() if r.flow_name == "flow_of_flows"][0]
        assert len(children) == 2 and {c.parent_flow_run_id for c in children} == {parent.id}

    def test_a_failing_child_fails_the_task_that_waited_for_it(self) -> None:
        """wait=True inside a task: the child's failure fails that task, and so the flow."""
        state = fails_with_its_child(return_state=True)
        assert state.is_failed() and "the child failed" in (state.message or "")


class TestCancel:
    @pytest.mark.parametrize("runner", ["threads", "processes"])
    def test_cancel_stops_a_running_flow_process(self, runner: str, tmp_path: Path) -> None:
        """A cancelled run stops: outstanding task runs end Cancelled, hooks run, the run ends Cancelled."""
        marker = tmp_path / "cancelled"
        flow_obj = _napping_with_hook(str(marker), runner)
        run_id = start_flow_run(flow_obj, {"n": 40, "seconds": 0.5, "marker": str(marker)})
        _wait_until(lambda: read_flow_run(run_id).task_counts.get("Completed", 0) >= 1, "a first task run to finish")
        cancel_flow_run(run_id)
        run = wait_for_flow_run(run_id, timeout=WAIT)
        assert run.state.is_cancelled()
        assert marker.read_text() == "Cancelled"  # on_cancellation ran in the flow process
        counts = run.task_counts
        assert counts.get("Cancelled", 0) >= 1 and counts.get("Completed", 0) < 40
        assert sum(counts.values()) == 40  # every task run recorded, none left Pending
        assert [s.name for s in run.state_history][-2:] == ["Cancelling", "Cancelled"]
        pid = _pid_of(run_id)
        _wait_until(lambda: not pid_alive(pid), "the flow process to exit")

    def test_cancel_a_flow_running_in_this_process(self, tmp_path: Path) -> None:
        """cancel_flow_run reaches a flow running in the caller's own process (the watcher thread)."""
        marker = tmp_path / "cancelled"
        flow_obj = _napping_with_hook(str(marker), "threads")
        states: list[Any] = []
        thread = threading.Thread(
            target=lambda: states.append(flow_obj(60, 0.5, str(marker), return_state=True)), daemon=True
        )
        thread.start()
        _wait_until(lambda: bool(list_flow_runs()), "the flow run to be recorded")
        cancel_flow_run(list_flow_runs()[0].id)
        thread.join(WAIT)
        assert states and states[0].is_cancelled()
        assert marker.read_text() == "Cancelled"
        assert read_flow_run(list_flow_runs()[0].id).state.is_cancelled()

    def test_cancelling_a_final_run_changes_nothing(self) -> None:
        """A completed run stays Completed when cancelled."""
        squares(1)
        run_id = list_flow_runs()[0].id
        assert cancel_flow_run(run_id).state.is_completed()


class TestReadAndRename:
    def test_unknown_ids_raise_run_not_found(self) -> None:
        """Every function given an unknown run id raises RunNotFound (a LookupError)."""
        for call in (
            lambda: read_flow_run("0" * 32),
            lambda: wait_for_flow_run("0" * 32),
            lambda: cancel_flow_run("0" * 32),
            lambda: rename_flow_run("0" * 32, "x"),
            lambda: get_task_run_result("0" * 32, "square"),
        ):
            with pytest.raises(RunNotFound):
                call()
        assert issubclass(RunNotFound, LookupError)

    def test_rename_and_read_by_unique_prefix(self) -> None:
        """A run can be renamed, and read by a unique prefix of its id."""
        squares(1)
        run_id = list_flow_runs()[0].id
        rename_flow_run(run_id, "renamed")
        assert read_flow_run(run_id[:8]).name == "renamed"
        with pytest.raises(ValueError):
            rename_flow_run(run_id, " ")

    def test_list_is_newest_first_with_filters(self) -> None:
        """list_flow_runs filters by flow, state and time, newest first, up to limit."""
        squares(1)
        fails(return_state=True)
        middle = time.time()
        squares(2)
        assert [r.flow_name for r in list_flow_runs()] == ["squares", "fails", "squares"]
        assert [r.parameters for r in list_flow_runs(flow_name="squares")] == [{"n": 2}, {"n": 1}]
        assert [r.flow_name for r in list_flow_runs(state="failed")] == ["fails"]
        assert [r.parameters for r in list_flow_runs(since=middle)] == [{"n": 2}]
        assert len(list_flow_runs(limit=2)) == 2

    def test_wait_gives_up_after_its_timeout(self) -> None:
        """wait_for_flow_run raises TimeoutError when the run is not final in time."""
        run_id = start_flow_run(squares, {"n": 1}, scheduled_start_time=datetime.now() + timedelta(seconds=60))
        try:
            with pytest.raises(TimeoutError, match="Scheduled"):
                wait_for_flow_run(run_id, timeout=0.5)
        finally:
            cancel_flow_run(run_id)
