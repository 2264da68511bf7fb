"""Columnar lanes: a map of plain calls kept by column, its futures and States read from the columns."""

from __future__ import annotations

import os
import threading
from array import array
from datetime import UTC, datetime
from typing import Any

import pytest

from taskyard import as_completed, flow, get_run_context, get_run_logger, task
from taskyard.context import FlowRunInfo, TaskRunInfo
from taskyard.futures import TaskFuture, add_done_callbacks
from taskyard.lane_engine import LaneRange, run_columns
from taskyard.lanes import Block, Lane, LaneFuture, LaneFutureList, lane_ready
from taskyard.progress import RunCounter
from taskyard.runners import ProcessPoolTaskRunner
from taskyard.runners.process_lanes import decode_block, encode_block
from taskyard.runids import lane_base, stepped_id
from taskyard.runs import list_flow_runs, read_flow_run
from taskyard.states import Cancelled, Completed, Failed, StateType


class LaneTestError(Exception):
    """Raised on purpose by the calls here."""


@task
def tenfold(x: int) -> int:
    return 10 * x


@task
def fails_on_3(x: int) -> int:
    if x == 3:
        raise LaneTestError("three")
    return x


@task
def whoami(x: int) -> tuple[int, int, str, str]:
    run = get_run_context().task_run
    assert run is not None
    return x, run.map_index, run.id, run.name


@task
def logs(x: int) -> int:
    get_run_logger().warning("call %d logs", x)
    return x


@task(retries=1)
def retried(x: int) -> int:
    return x


@task
def exits_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(3)
    return x


@task
def keeps_its_run(x: int) -> TaskRunInfo:
    run = get_run_context().task_run
    assert run is not None
    return run  # kept past the call: travels whole, after the next calls ran


@task
def scaled(factor: int, x: int) -> int:  # the mapped parameter is not the first
    return factor * x


@task
def offset_by(x: int, /, *rest: int, by: int = 0) -> int:  # positional-only and *args: bound by name
    return x + sum(rest) + by


@task
def with_keyword(x: int, y: int = 0, *, by: int = 1) -> int:
    return (x + y) * by


@task
def submits(x: int) -> int:
    return tenfold.submit(x).result() + 1


_FLOW_RUN = FlowRunInfo("f" * 32, "flow-run", "flow")


def _lane(n: int, t: Any = tenfold) -> Lane:
    return Lane(t, _FLOW_RUN, {}, {"x": range(n)}, n, lane_base(), frozenset({"a"}))


def _block(start: int, values: list[Any], special: dict[int, Any] | None = None, logs: Any = None) -> Block:
    n = len(values)
    starts = array("d", [1000.0 + start + i for i in range(n)])
    ends = array("d", [1000.5 + start + i for i in range(n)])
    return Block(start, values, starts, ends, special, logs)


class TestLane:
    def test_a_block_completes_its_calls_and_result_is_the_column(self) -> None:
        """The futures of the calls a block covers are done, the others not; result() returns the results in order."""
        lane = _lane(6)
        futures = lane.make_futures()
        lane.complete(_block(0, [0, 10, 20]))
        assert [f.done() for f in futures] == [True] * 3 + [False] * 3
        lane.complete(_block(3, [30, 40, 50]))
        assert futures.result(timeout=0) == [0, 10, 20, 30, 40, 50]

    def test_a_completed_calls_state_is_built_once_as_the_fast_path_makes_it(self) -> None:
        """A completed call's State is the fast path's Completed, with the call's own times, and the same object on every read."""
        lane = _lane(2)
        futures = lane.make_futures()
        lane.complete(_block(0, [0, 10]))
        state = futures[1].state
        assert state is futures[1].state
        expected = Completed(10, start_time=datetime.fromtimestamp(1001.0, UTC), timestamp=datetime.fromtimestamp(1001.5, UTC))
        assert state.model_dump() == expected.model_dump()
        assert futures[0].result() == 0 and futures[1].task_run_id == stepped_id(lane.id_base, 1)
        assert futures[1].task_run_name == f"tenfold-{stepped_id(lane.id_base, 1)[:8]}"

    def test_the_first_failure_in_list_order_is_raised(self) -> None:
        """result() raises the exception of the first failed call in list order; without raising, failures come back as exceptions."""
        lane = _lane(5)
        futures = lane.make_futures()
        errors = {1: LaneTestError("one"), 3: LaneTestError("three")}
        lane.complete(_block(0, [0, None, 2, None, 4], {i: Failed(e) for i, e in errors.items()}))
        with pytest.raises(LaneTestError, match="one"):
            futures.result()
        assert futures.result(raise_on_failure=False) == [0, errors[1], 2, errors[3], 4]
        assert [f._state_name() for f in futures] == ["Completed", "Failed", "Completed", "Failed", "Completed"]

    def test_a_list_changed_by_its_owner_reads_its_futures(self) -> None:
        """A map's list reordered by its owner gives the results in its own order."""
        lane = _lane(3)
        futures = lane.make_futures()
        lane.complete(_block(0, [0, 10, 20]))
        futures.reverse()
        assert futures.result() == [20, 10, 0]

    def test_callbacks_waits_and_as_completed_follow_blocks(self) -> None:
        """Callbacks run, waits end and as_completed yields as the blocks arrive from another thread."""
        lane = _lane(4)
        futures = lane.make_futures()
        seen: list[int] = []
        futures[3].add_done_callback(lambda f: seen.append(f.result()))

        def feed() -> None:
            lane.complete(_block(2, [20, 30]))
            lane.complete(_block(0, [0, 10]))

        threading.Timer(0.05, feed).start()
        order = [f.result() for f in as_completed(futures, timeout=30)]
        assert sorted(order) == [0, 10, 20, 30] and seen == [30]
        futures[0].wait(timeout=0)
        done: list[TaskFuture[Any]] = []
        futures[0].add_done_callback(done.append)  # done already: called at once
        assert done == [futures[0]]

    def test_a_range_is_cancelled_except_what_is_done(self) -> None:
        """Cancelling a range leaves calls already done as they were."""
        lane = _lane(4)
        futures = lane.make_futures()
        lane.complete(_block(0, [0]))
        lane.settle_range(0, 4, Cancelled("stop"))
        assert [f.state.name for f in futures] == ["Completed", "Cancelled", "Cancelled", "Cancelled"]
        assert lane.failed == 3

    def test_a_lane_future_is_settled_through_set_state(self) -> None:
        """A second future over a call (a runner's, for a call sent on as an ordinary one) completes the user's future."""
        lane = _lane(2)
        futures = lane.make_futures()
        seen: list[str] = []
        futures[1].add_done_callback(lambda f: seen.append(f.state.name))
        LaneFuture(lane, 1)._set_state(Failed(LaneTestError("lost")))
        assert futures[1].state.is_failed() and seen == ["Failed"] and not futures[0].done()

    def test_progress_counts_a_block_at_once(self) -> None:
        """The progress counter counts a block's calls and its failures when the block arrives."""
        counter = RunCounter()
        lane = _lane(4)
        lane.watch(counter.expect("tenfold", 4, mapped=True).add)
        lane.make_futures()
        lane.complete(_block(0, [0, None, 20], {1: Failed(LaneTestError("x"))}))
        assert [(name, done, failed, total) for name, done, failed, total, _ in counter.snapshot()] == [("tenfold", 3, 1, 4)]

    def test_add_done_callbacks_takes_lane_futures(self) -> None:
        """Callbacks added to many futures at once reach lane futures too."""
        lane = _lane(2)
        futures = lane.make_futures()
        seen: list[int] = []
        add_done_callbacks([*futures, _done_future()], lambda f: seen.append(1))
        lane.complete(_block(0, [0, 10]))
        assert len(seen) == 3


class TestLaneReady:
    def test_plain_tasks_and_values_take_the_lane(self) -> None:
        """A plain task over built-in values is ready (True); over other values without futures, ready (False)."""
        assert lane_ready(tenfold, _FLOW_RUN, {}, {"x": range(3)}) is True
        assert lane_ready(tenfold, _FLOW_RUN, {}, {"x": [object()]}) is False

    def test_options_and_futures_keep_a_map_off_the_lane(self) -> None:
        """Retries, a run name of its own, or a future among the values keep a map on the ordinary path."""
        assert lane_ready(retried, _FLOW_RUN, {}, {"x": range(3)}) is None
        assert lane_ready(tenfold.with_options(task_run_name="t-{x}"), _FLOW_RUN, {}, {"x": range(3)}) is None
        assert lane_ready(tenfold, _FLOW_RUN, {}, {"x": [_done_future()]}) is None


class TestRunColumns:
    def _range(self, t: Any, n: int, start: int = 10) -> LaneRange:
        flow_run = FlowRunInfo("f" * 32, "flow-run", "flow", pid=1)  # another process: logs are captured
        return LaneRange(t, flow_run, {}, ["x"], [range(n)], start, lane_base(), frozenset())

    def test_each_call_runs_as_its_own_run(self) -> None:
        """Each call sees its own map index, run id and name in the run context."""
        lane = self._range(whoami, 3)
        block = run_columns(lane, 0)
        states = [block.special[10 + i] for i in range(3)]  # tuples travel as whole States
        assert [s.result() for s in states] == [
            (i, 10 + i, stepped_id(lane.id_base, 10 + i), f"whoami-{stepped_id(lane.id_base, 10 + i)[:8]}") for i in range(3)
        ]

    def test_a_raising_call_fails_alone_with_its_traceback(self) -> None:
        """A call that raises has a Failed State with its traceback and failure log; the calls after it run."""
        block = run_columns(self._range(fails_on_3, 5, start=0), 0)
        assert block.results == [0, 1, 2, None, 4] and list(block.special) == [3]
        failed = block.special[3]
        assert failed.type is StateType.FAILED and "LaneTestError: three" in (failed.traceback or "")
        assert [r["msg"].splitlines()[0] for r in failed.log_records or ()] == ["Finished in state Failed: LaneTestError: three"]
        back = decode_block(encode_block(block))
        assert back.results == block.results and back.special[3].message == failed.message

    def test_log_records_travel_with_their_call(self) -> None:
        """Records a completed call logs travel with the block, under that call's index."""
        block = run_columns(self._range(logs, 2), 0)
        assert {index: [r["msg"] for r in records] for index, records in block.logs.items()} == {
            10: ["call 0 logs"], 11: ["call 1 logs"]
        }

    def test_a_range_stops_when_its_time_is_up(self) -> None:
        """With a flush time of zero every call is a block of its own, and the next block goes on from there."""
        lane = self._range(tenfold, 3)
        first = run_columns(lane, 0, flush_seconds=0.0)
        second = run_columns(lane, 1, flush_seconds=0.0)
        assert (first.start, first.results, second.start, second.results) == (10, [0], 11, [10])


    def test_a_run_kept_past_its_call_stays_its_own(self) -> None:
        """The run a call keeps (and returns) still names that call after the next calls ran, with its parameters and start."""
        lane = self._range(keeps_its_run, 3)
        block = run_columns(lane, 0)
        runs = [block.special[10 + i].result() for i in range(3)]
        assert [(r.map_index, r.id, r.parameters, r.state_name) for r in runs] == [
            (10 + i, stepped_id(lane.id_base, 10 + i), {"x": i}, "Running") for i in range(3)
        ]
        assert [r.started for r in runs] == list(block.starts)

    def test_calls_are_bound_as_their_signature_says(self) -> None:
        """Mapped arguments after a static one, positional-only parameters, *args and keywords reach each call as in a plain call."""
        flow_run = FlowRunInfo("f" * 32, "flow-run", "flow")
        cases = [
            (scaled, {"factor": 3}, ["x"], [[1, 2]], [3, 6]),
            (offset_by, {"by": 10}, ["x", "rest"], [[1, 2], [(1, 1), ()]], [13, 12]),
            (with_keyword, {"by": 2}, ["x", "y"], [[1, 2], [10, 20]], [22, 44]),
            (with_keyword, {}, ["y", "x"], [[10, 20], [1, 2]], [11, 22]),
        ]
        for t, static, names, columns, expected in cases:
            lane = LaneRange(t, flow_run, static, names, columns, 0, lane_base(), frozenset())
            block = run_columns(lane, 0)
            assert (block.results, block.special) == (expected, {}), t.name

    def test_the_shared_counter_counts_each_call_as_it_starts(self) -> None:
        """``started[0]`` goes up by one per call, from where it was (a worker's count over its life)."""
        started = [5]
        block = run_columns(self._range(tenfold, 4), 1, started)
        assert (started, block.start, block.results) == ([8], 11, [10, 20, 30])

    def test_starts_and_ends_follow_each_other(self) -> None:
        """Each call starts no earlier than the one before it ended, and ends no earlier than it started."""
        block = run_columns(self._range(logs, 50), 0)
        times = [t for pair in zip(block.starts, block.ends, strict=True) for t in pair]
        assert times == sorted(times) and times[0] > 0

    def test_runs_submitted_in_a_call_finish_with_it(self) -> None:
        """A call that submits runs of its own (taskyard.nested) has them waited for, call by call."""
        flow_run = FlowRunInfo("f" * 32, "flow-run", "flow")
        block = run_columns(LaneRange(submits, flow_run, {}, ["x"], [[1, 2, 3]], 0, lane_base(), frozenset()), 0)
        assert (block.results, block.special) == ([11, 21, 31], {})

class TestProcessRunnerLanes:
    def test_a_plain_map_runs_as_a_lane_with_its_calls_recorded(self) -> None:
        """A map of plain calls on processes runs in a lane; every run is recorded with its id, name, index, state and times."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> tuple[str, dict[str, tuple[Any, ...]]]:
            futures = fails_on_3.map(range(300))
            futures.wait()
            return type(futures).__name__, {
                fu.task_run_id: (fu.task_run_name, i, fu.state.name, fu.state.start_time, fu.state.timestamp)
                for i, fu in enumerate(futures)
            }

        kind, ran = f()
        assert kind == LaneFutureList.__name__
        record = read_flow_run(list_flow_runs()[0].id)
        assert {t.id: (t.name, t.map_index, t.state.name, t.start_time, t.end_time) for t in record.task_runs} == ran
        assert record.task_counts == {"Completed": 299, "Failed": 1}

    def test_one_failing_call_fails_alone_and_as_completed_yields_all(self) -> None:
        """One call raising fails alone, with its traceback; as_completed yields every call of the lane."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> tuple[list[Any], int, str, str]:
            futures = fails_on_3.map(range(50))
            yielded = len(list(as_completed(futures, timeout=60)))
            failed = futures[3].state
            return futures.result(raise_on_failure=False), yielded, failed.name, failed.traceback or ""

        results, yielded, name, traceback = f()
        assert yielded == 50 and isinstance(results[3], LaneTestError)
        assert [r for i, r in enumerate(results) if i != 3] == [i for i in range(50) if i != 3]
        assert name == "Failed" and "LaneTestError: three" in traceback

    def test_a_call_that_kills_its_worker_ends_crashed_alone(self) -> None:
        """The call a worker died running ends Crashed; the calls it had run before it in the same block complete."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def f() -> list[str]:
            futures = exits_on.map(range(12), 5)
            futures.wait()
            return [fu.state.name for fu in futures]

        names = f.with_options(retries=0)(return_state=True).result(raise_on_failure=False)
        assert names == ["Completed"] * 5 + ["Crashed"] + ["Completed"] * 6

    def test_calls_see_their_own_runs(self) -> None:
        """Each call of a lane sees its own map index, run id and name, as its future has them."""

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def f() -> list[tuple[Any, ...]]:
            futures = whoami.map(range(40))
            return [(*fu.result(), fu.task_run_id, fu.task_run_name) for fu in futures]

        for i, (x, index, run_id, name, future_id, future_name) in enumerate(f()):
            assert (x, index, run_id, name) == (i, i, future_id, future_name)


def _done_future() -> TaskFuture[Any]:
    future: TaskFuture[Any] = TaskFuture("d" * 32, "done")
    future._set_state(Completed(1))
    return future
