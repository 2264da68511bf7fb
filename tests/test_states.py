"""States: results, exceptions, transitions and serialization."""

from __future__ import annotations

import pickle

import pytest

from taskyard.exceptions import CancelledRunError, CrashedRunError, MissingResultError, UpstreamTaskError
from taskyard.states import (
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    IllegalTransition,
    NotReady,
    Pending,
    Running,
    StateType,
    check_transition,
)


class TestState:
    def test_result_and_raise_on_failure(self) -> None:
        """result() gives data, or raises / returns the exception."""
        assert Completed(5).result() == 5
        failed = Failed(KeyError("k"))
        with pytest.raises(KeyError):
            failed.result()
        assert isinstance(failed.result(raise_on_failure=False), KeyError)

    def test_kinds_of_bad_state_raise_named_errors(self) -> None:
        """Crashed, Cancelled and NotReady raise their own RunError subclasses."""
        with pytest.raises(CrashedRunError):
            Crashed("worker died").result()
        with pytest.raises(CancelledRunError):
            Cancelled().result()
        with pytest.raises(UpstreamTaskError, match="up-1"):
            NotReady("up-1", Failed(ValueError())).result()

    def test_unfinished_state_has_no_result(self) -> None:
        """A Pending or Running state raises MissingResultError."""
        with pytest.raises(MissingResultError):
            Pending().result()

    def test_names_and_types(self) -> None:
        """Cached is COMPLETED, NotReady is FAILED; predicates follow the type."""
        assert Cached(1).type is StateType.COMPLETED and Cached(1).is_completed()
        not_ready = NotReady("u", Failed())
        assert not_ready.type is StateType.FAILED and not_ready.name == "NotReady" and not_ready.is_final()
        assert not Running().is_final()

    def test_remote_traceback_becomes_the_cause(self) -> None:
        """A state that crossed a process keeps the remote traceback as __cause__."""
        try:
            raise ValueError("deep")
        except ValueError as exc:
            state = Failed(exc, traceback="Traceback (remote):\n  in worker\nValueError: deep")
        travelled = pickle.loads(pickle.dumps(state))
        with pytest.raises(ValueError) as info:
            travelled.result()
        assert "in worker" in str(info.value.__cause__)

    def test_frozen(self) -> None:
        """States are immutable."""
        from pydantic import ValidationError

        with pytest.raises(ValidationError):
            Completed(1).name = "x"  # type: ignore[misc]


class TestCompletedFastPath:
    def test_completed_equals_a_validated_state(self) -> None:
        """Completed() (built without validation) has every field of State, equal to a validated one."""
        from taskyard.states import State

        fast = Completed([1], run_count=2, message="ok")
        assert set(fast.__dict__) == set(State.model_fields)
        slow = State(type=StateType.COMPLETED, name="Completed", message="ok", data=[1], run_count=2, timestamp=fast.timestamp)
        assert fast == slow and fast.model_dump() == slow.model_dump()

    def test_completed_and_unpickled_states_share_their_dict_keys(self) -> None:
        """A Completed state's fields, and an unpickled state's, sit in a key-sharing dict: smaller than a plain one."""
        import sys

        for state in (Completed([1]), pickle.loads(pickle.dumps(Completed([1]))), pickle.loads(pickle.dumps(Failed(ValueError("x"))))):
            assert sys.getsizeof(state.__dict__) < sys.getsizeof(dict(state.__dict__))
            assert list(state.__dict__) == list(type(state).model_fields)

    def test_completed_states_copy_and_pickle_independently(self) -> None:
        """model_copy and pickling of a Completed state leave other Completed states untouched."""
        first, second = Completed(1), Completed(2)
        copied = first.model_copy(update={"result_location": "here"})
        assert copied.result_location == "here" and first.result_location is None and second.result_location is None
        assert "result_location" not in second.model_fields_set
        assert pickle.loads(pickle.dumps(first)) == first


class TestTransitions:
    def test_allowed_and_illegal_moves(self) -> None:
        """The table allows the engine's moves and rejects the impossible ones."""
        check_transition(None, StateType.PENDING)
        check_transition(StateType.PENDING, StateType.RUNNING)
        check_transition(StateType.RUNNING, StateType.COMPLETED)
        check_transition(StateType.FAILED, StateType.RUNNING)  # a retry
        with pytest.raises(IllegalTransition):
            check_transition(StateType.COMPLETED, StateType.RUNNING)
        with pytest.raises(IllegalTransition):
            check_transition(StateType.CANCELLED, StateType.COMPLETED)
