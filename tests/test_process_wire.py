"""What the process runner sends between the flow process and its workers: packed calls, state pages."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import pickle
from typing import Any

import pytest

from taskyard import task
from taskyard.context import FlowRunInfo, TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.gcpause import collector_paused
from taskyard.logs import LogCapture, levels_held
from taskyard.runners.process_worker import _frame, decode_state, encode_state, pack_calls, unpack_calls
from taskyard.runners.state_pages import PAGE, PAGE_BYTES, PageWriter, StatePages, frames_in
from taskyard.states import Completed, Failed


@task
def double(x: int) -> int:
    return 2 * x


@task
def other(x: int) -> int:
    return x


def _calls(n: int, t: Any = double) -> list[TaskCall[Any]]:
    flow_run = FlowRunInfo("f" * 32, "flow-run", "flow")
    return [
        TaskCall(t, {"x": i}, TaskRunInfo(f"{i:032x}", f"double-{i}", t.name, frozenset({"a"}), i, flow_run_id=flow_run.id), flow_run)
        for i in range(n)
    ]


def _same(a: TaskCall[Any], b: TaskCall[Any]) -> bool:
    return a.task.name == b.task.name and a.parameters == b.parameters and a.task_run == b.task_run and a.flow_run.id == b.flow_run.id  # type: ignore[union-attr]


class TestPackedCalls:
    def test_a_map_batch_comes_back_call_for_call(self) -> None:
        """The calls of a map, packed as rows, unpack to calls with the same task, arguments and run identity."""
        calls = _calls(5)
        calls[3].task_run.run_count = 2  # placed again after a lost attempt
        back = unpack_calls(pack_calls(calls))
        assert all(_same(a, b) for a, b in zip(calls, back, strict=True))
        assert back[3].task_run.run_count == 2
        assert back[0].flow_run is back[4].flow_run

    def test_mixed_calls_travel_whole(self) -> None:
        """Calls of different tasks, or with run state already set, travel as whole calls and come back equal."""
        mixed = _calls(2) + _calls(2, other)
        started = _calls(2)
        started[1].task_run.started = 1.0
        for calls in (mixed, started):
            assert isinstance(pickle.loads(pack_calls(calls)), list)
            assert all(_same(a, b) for a, b in zip(calls, unpack_calls(pack_calls(calls)), strict=True))

    def test_a_run_identity_pickles_without_its_nested_pool(self) -> None:
        """A TaskRunInfo pickles every field but its nested pool."""
        info = TaskRunInfo("i", "n", "t", frozenset({"x"}), 3, 2, "txn", "f", {"p": 1}, "RUNNING", "Running", 1.0, 2.0, nested=object())
        back = pickle.loads(pickle.dumps(info))
        assert back == info and back.nested is None


class _Stubborn(int):
    """An int whose pickle does not load again (its constructor wants two arguments)."""

    def __new__(cls, value: int, extra: str) -> _Stubborn:
        return super().__new__(cls, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return _Stubborn, (int(self),)


class TestEncodedStates:
    @pytest.mark.parametrize("value", [None, 3, 2.5, 1j, True, "text", b"bytes"])
    def test_a_built_in_result_comes_back_as_it_went(self, value: Any) -> None:
        """A state holding a built-in value is decoded with the same value, type and fields."""
        state = Completed(value, run_count=2, start_time=Completed(None).timestamp)
        back = decode_state(encode_state(state))
        assert type(back.data) is type(value) and back.data == value
        assert (back.type, back.name, back.run_count, back.timestamp, back.start_time) == (
            state.type, state.name, 2, state.timestamp, state.start_time
        )

    def test_a_subclass_of_a_built_in_that_will_not_load_fails_clearly(self) -> None:
        """A result of a subclass of int is still checked: one whose pickle will not load becomes a Failed state."""
        back = decode_state(encode_state(Completed(_Stubborn(3, "x"))))
        assert back.is_failed() and "cannot be sent back" in str(back.message)


class TestStatePages:
    def _pages(self) -> tuple[StatePages, PageWriter, list[bytes]]:
        pages = StatePages(multiprocessing.get_context("spawn"))
        sent: list[bytes] = []
        return pages, PageWriter(pages, sent.append), sent

    def _drain(self, pages: StatePages, sent: list[bytes]) -> list[bytes]:
        """What the flow process reads from the pipe frames, pages taken as their frames say."""
        out: list[bytes] = []
        for frame in frames_in(b"".join(sent)):
            out.extend(pages.take(frame[1]) if frame[:1] == PAGE else [frame])
        sent.clear()
        return out

    def test_states_arrive_in_order_a_page_at_a_time(self) -> None:
        """States put in a page reach the reader only once it is handed over, all of them, in order."""
        pages, writer, sent = self._pages()
        for i in range(3):
            writer.put(_frame(encode_state(Completed(i))))
        assert sent == []
        writer.hand_over()
        assert [decode_state(p).result() for p in self._drain(pages, sent)] == [0, 1, 2]

    def test_a_state_larger_than_a_page_goes_by_pipe_after_the_page(self) -> None:
        """A state too large for a page follows the states put before it, by pipe."""
        pages, writer, sent = self._pages()
        writer.put(_frame(encode_state(Completed("small"))))
        writer.put(_frame(encode_state(Completed(b"x" * (PAGE_BYTES + 1)))))
        writer.hand_over(wait=True)
        results = [decode_state(p).result() for p in self._drain(pages, sent)]
        assert results[0] == "small" and len(results[1]) == PAGE_BYTES + 1

    def test_a_full_page_is_handed_over_and_the_other_one_filled(self) -> None:
        """States filling more than a page span both pages and keep their order."""
        pages, writer, sent = self._pages()
        blob = b"y" * (PAGE_BYTES // 3)
        taken: list[bytes] = []
        pages_used = []
        for i in range(7):
            writer.put(_frame(encode_state(Completed((i, blob)))))
            if sent:  # the reader takes what was handed over, as the flow process does
                pages_used.extend(frame[1] for frame in frames_in(b"".join(sent)))
                taken += self._drain(pages, sent)
        writer.hand_over()
        taken += self._drain(pages, sent)
        assert [decode_state(p).result()[0] for p in taken] == list(range(7))
        assert pages_used == [0, 1, 0]
        assert pages.left() == []

    def test_the_writer_keeps_filling_while_the_other_page_is_not_taken(self) -> None:
        """Until the reader takes the page handed over, the writer goes on in its own page; nothing is lost or reordered."""
        pages, writer, sent = self._pages()
        writer.put(_frame(encode_state(Completed(0))))
        writer.hand_over()  # page 0 handed over, not taken yet
        writer.put(_frame(encode_state(Completed(1))))
        writer.hand_over()  # page 0 not taken: nothing to hand over
        writer.put(_frame(encode_state(Completed(2))))
        assert len(frames_in(b"".join(sent))) == 1
        taken = self._drain(pages, sent)
        writer.hand_over()
        taken += self._drain(pages, sent)
        assert [decode_state(p).result() for p in taken] == [0, 1, 2]

    def test_what_a_dead_writer_left_is_read_oldest_first(self) -> None:
        """After the writer is gone, the page handed over (its frame lost) comes before the page it was filling."""
        pages, writer, sent = self._pages()
        writer.put(_frame(encode_state(Completed("older"))))
        writer.hand_over()
        sent.clear()  # the pipe frame never arrived
        writer.put(_frame(encode_state(Failed(ValueError("newer")))))
        left = [decode_state(p) for p in pages.left()]
        assert [s.result(raise_on_failure=False) for s in left][0] == "older"
        assert str(left[1].result(raise_on_failure=False)) == "newer"
        assert pages.left() == []


class TestCollectorPause:
    def test_paused_for_large_batches_only_and_restored(self) -> None:
        """The collector is off inside a block making many calls, on again after; small blocks leave it alone."""
        assert gc.isenabled()
        with collector_paused(10):
            assert gc.isenabled()
        with collector_paused(100_000):
            assert not gc.isenabled()
        assert gc.isenabled()

    def test_a_user_who_turned_it_off_keeps_it_off(self) -> None:
        """A block never turns on a collector that was off when it began."""
        gc.disable()
        try:
            with collector_paused(100_000):
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()


class TestLoggerLevels:
    def test_levels_are_lowered_while_held_and_restored_after_the_last(self) -> None:
        """Nested holders lower the root logger to the lowest level asked for, and the last one restores it."""
        root = logging.getLogger()
        before = root.level
        root.setLevel(logging.WARNING)
        try:
            with levels_held(logging.INFO):
                assert root.level == logging.INFO
                with LogCapture(logging.DEBUG):
                    assert root.level == logging.DEBUG
                assert root.level == logging.INFO
                with LogCapture(logging.INFO) as capture:
                    logging.getLogger("taskyard.test").info("kept")
                assert [r["msg"] for r in capture.records] == ["kept"]
            assert root.level == logging.WARNING
        finally:
            root.setLevel(before)

    @pytest.mark.parametrize("level", [logging.INFO])
    def test_a_capture_outside_a_batch_restores_at_once(self, level: int) -> None:
        """A capture of its own lowers the level for its duration only."""
        root = logging.getLogger()
        before = root.level
        root.setLevel(logging.ERROR)
        try:
            with LogCapture(level):
                assert root.level == level
            assert root.level == logging.ERROR
        finally:
            root.setLevel(before)
