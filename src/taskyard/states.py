"""Run states: what happened to a task or flow run, as an immutable record.

A :class:`State` is a frozen pydantic model. Its ``type`` says where the run is
in its life (:class:`StateType`), its ``name`` refines it (``Cached`` is a
COMPLETED state, ``TimedOut`` and ``NotReady`` are FAILED ones, ``Retrying`` is
a RUNNING one). A final state carries the run's result, or the exception that
ended it, in ``data``.

The constructor functions below (``Completed()``, ``Failed()``, ...) are the
only way the engine makes states; :func:`check_transition` holds the table of
moves a run may make and is the one place it is enforced.
"""

from __future__ import annotations

import enum
import sys
from contextvars import ContextVar
from collections.abc import Iterable
from datetime import datetime, UTC
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskyard.exceptions import (
    CancelledRunError,
    CrashedRunError,
    MissingResultError,
    RunError,
    UpstreamTaskError,
)

__all__ = (
    "StateType",
    "State",
    "Scheduled",
    "Pending",
    "Running",
    "Retrying",
    "Completed",
    "Cached",
    "Failed",
    "TimedOut",
    "NotReady",
    "Crashed",
    "Cancelled",
    "Cancelling",
    "Paused",
    "check_transition",
    "IllegalTransition",
)

R = TypeVar("R")
_UTC = UTC


class StateType(enum.StrEnum):
    """Where a run is in its life."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
    CANCELLING = "CANCELLING"
    PAUSED = "PAUSED"


# The members as module constants: on Python 3.11 reading ``StateType.COMPLETED``
# costs about 150 ns (an enum descriptor), and every run's state reads some.
_SCHEDULED, _PENDING, _RUNNING = StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING
_COMPLETED, _FAILED, _CRASHED, _CANCELLED = StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED
_FINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
_BAD = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


class _RemoteTraceback(Exception):
    """Carries the text of a traceback from the process the run failed in."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# The sets of field names states were made with, one object per distinct set:
# pydantic keeps a set per model (~730 bytes), which a map of a million runs
# would pay a million times. Nothing mutates them; model_copy copies the set
# before adding to it.
_FIELD_SETS: dict[frozenset[str], set[str]] = {}
_set = object.__setattr__


def shared_fields(names: Iterable[str]) -> set[str]:
    """The one shared set equal to ``names`` (for ``model_construct(_fields_set=...)``)."""
    key = frozenset(names)
    found = _FIELD_SETS.get(key)
    if found is None:
        found = _FIELD_SETS.setdefault(key, set(key))
    return found


class State(BaseModel, Generic[R]):
    """The state of a task or flow run.

    Attributes:
        type: Where the run is in its life.
        name: A finer name, e.g. ``Completed``, ``Cached``, ``TimedOut``.
        message: A human-readable explanation, if any.
        timestamp: When the run entered this state (UTC).
        data: The result of a COMPLETED run, or the exception that ended a
            FAILED, CRASHED or CANCELLED one.
        run_count: How many attempts the run had made when it got here.
        traceback: The formatted traceback of an exception raised in another
            process than the flow's; attached as ``__cause__`` when the
            exception is re-raised.
        result_location: Where the result was persisted, if it was.
        start_time: When the run's first attempt started (None for a run
            that never started, or a state that is not a run's final one).
        history: The states a run passed through on its way to this one
            (``Retrying`` before each retry), oldest first; empty unless it
            retried.
        log_records: Log records made in another process during the run,
            replayed in the flow process when the state arrives there.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: StateType
    name: str = ""  # "" → the type's name, "Completed" for COMPLETED (see _default_name)
    message: str | None = None
    timestamp: datetime = Field(default_factory=lambda: _now())
    data: Any = None
    run_count: int = 0
    traceback: str | None = None
    result_location: str | None = None
    start_time: datetime | None = None
    history: tuple[State, ...] = Field(default=(), repr=False)  # type: ignore[type-arg]
    log_records: tuple[dict[str, Any], ...] | None = Field(default=None, repr=False)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # As pydantic's, but a state unpickled from a worker shares its set of
        # field names with the others, and its fields are set one by one so
        # that its instance dict shares its keys too (see Completed).
        _set(self, "__pydantic_fields_set__", shared_fields(state.get("__pydantic_fields_set__", ())))
        _set(self, "__pydantic_extra__", state.get("__pydantic_extra__", {}))
        _set(self, "__pydantic_private__", state.get("__pydantic_private__", {}))
        for name, value in state.get("__dict__", {}).items():
            _set(self, name, value)

    @model_validator(mode="after")
    def _default_name(self) -> State[R]:
        # State(type=StateType.COMPLETED) is named "Completed", as in Prefect.
        if not self.name:
            object.__setattr__(self, "name", self.type.value.capitalize())
        return self

    async def aresult(self, raise_on_failure: bool = True) -> R:
        """:meth:`result` for async code: ``await state.aresult()``."""
        return self.result(raise_on_failure=raise_on_failure)

    def __repr__(self) -> str:
        msg = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{msg})"

    __str__ = __repr__

    def is_scheduled(self) -> bool:
        return self.type is _SCHEDULED

    def is_pending(self) -> bool:
        return self.type is _PENDING

    def is_running(self) -> bool:
        return self.type is _RUNNING

    def is_completed(self) -> bool:
        return self.type is _COMPLETED

    def is_failed(self) -> bool:
        return self.type is _FAILED

    def is_crashed(self) -> bool:
        return self.type is _CRASHED

    def is_cancelled(self) -> bool:
        return self.type is _CANCELLED

    def is_final(self) -> bool:
        """True once the run can change no more: completed, failed, crashed or cancelled."""
        return self.type in _FINAL

    def is_bad(self) -> bool:
        """True for a final state that holds no result: failed, crashed or cancelled."""
        return self.type in _BAD

    def exception(self) -> BaseException | None:
        """The exception that ended the run, or None if it did not end badly."""
        if self.type not in _BAD:
            return None
        exc: BaseException
        if not isinstance(self.data, BaseException):
            exc = _ERROR_FOR_TYPE[self.type](self.message or self.name)
        else:
            exc = self.data
            if self.traceback and exc.__cause__ is None:
                exc.__cause__ = _RemoteTraceback(self.traceback)
        return exc

    def fresh_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> State[R]:
        """A copy of this state stamped now (``model_copy`` arguments apply).

        Args:
            update: Fields to change in the copy.
            deep: Copy ``data`` too, instead of sharing it.
        """
        return self.model_copy(update={"timestamp": _now(), **(update or {})}, deep=deep)

    def result(self, raise_on_failure: bool = True) -> R:
        """Return the run's result, or raise the exception that ended it.

        In the body of an async task or flow it returns an awaitable instead,
        as in Prefect: write ``await state.result()`` there (or
        ``await state.aresult()`` anywhere).

        Args:
            raise_on_failure: When False, a failed, crashed or cancelled run
                returns its exception instead of raising it.

        Raises:
            MissingResultError: The run has not reached a final state.
            Exception: The run's own exception (or an UpstreamTaskError,
                CrashedRunError, CancelledRunError) when it ended badly.
        """
        if async_code_var.get() and _called_from_user_code():
            return self.aresult(raise_on_failure)  # type: ignore[return-value]
        if self.type is _COMPLETED:
            data = self.data
            loader = getattr(data, "__taskyard_load__", None)
            return loader() if loader is not None else data  # type: ignore[no-any-return]
        exc = self.exception()
        if exc is None:
            raise MissingResultError(f"the run is {self.name}, not finished; it has no result yet")
        if raise_on_failure:
            raise exc
        return exc  # type: ignore[return-value]


# True while the body of an async task or flow runs (set by the drivers in
# execution.py); there State.result() called by user code returns an awaitable.
async_code_var: ContextVar[bool] = ContextVar("taskyard_async_code", default=False)


def _called_from_user_code() -> bool:
    # taskyard's own modules (and its plugins') always want the value.
    module = sys._getframe(2).f_globals.get("__name__", "")
    return not module.startswith(("taskyard.", "taskyard_"))


_ERROR_FOR_TYPE: dict[StateType, type[RunError]] = {
    StateType.FAILED: RunError,
    StateType.CRASHED: CrashedRunError,
    StateType.CANCELLED: CancelledRunError,
}


def _now() -> datetime:
    return datetime.now(_UTC)


def _make(
    type_: StateType, name: str, message: str | None, data: Any = None, timestamp: datetime | None = None, **kw: Any
) -> State[Any]:
    at = _now() if timestamp is None else timestamp
    return State(type=type_, name=name, message=message, timestamp=at, data=data, **kw)


def Scheduled(message: str | None = None, *, name: str = "Scheduled") -> State[Any]:
    return _make(StateType.SCHEDULED, name, message)


def Pending(message: str | None = None, *, name: str = "Pending") -> State[Any]:
    return _make(StateType.PENDING, name, message)


def Running(message: str | None = None, *, run_count: int = 1, name: str = "Running") -> State[Any]:
    return _make(StateType.RUNNING, name, message, run_count=run_count)


def Retrying(message: str | None = None, *, run_count: int = 1) -> State[Any]:
    return _make(StateType.RUNNING, "Retrying", message, run_count=run_count)


_COMPLETED_FIELDS = shared_fields({"type", "name", "message", "timestamp", "data", "run_count", "start_time"})
_new_state = State.__new__


def Completed(
    data: Any = None,
    *,
    message: str | None = None,
    run_count: int = 1,
    name: str = "Completed",
    start_time: datetime | None = None,
    timestamp: datetime | None = None,
) -> State[Any]:
    # The hot path of every run: built as State.model_construct would, without
    # validating values that are right by construction (3-4x faster). Its
    # fields are set one by one, in their declared order, rather than as one
    # dict: the instance dict then shares its keys with every other state's
    # (CPython's key-sharing dict), about 200 bytes instead of 460, and a
    # million-run map keeps a million states.
    state = _new_state(State)
    _set(state, "type", _COMPLETED)
    _set(state, "name", name)
    _set(state, "message", message)
    _set(state, "timestamp", datetime.now(_UTC) if timestamp is None else timestamp)
    _set(state, "data", data)
    _set(state, "run_count", run_count)
    _set(state, "traceback", None)
    _set(state, "result_location", None)
    _set(state, "start_time", start_time)
    _set(state, "history", ())
    _set(state, "log_records", None)
    _set(state, "__pydantic_fields_set__", _COMPLETED_FIELDS)
    _set(state, "__pydantic_extra__", None)
    _set(state, "__pydantic_private__", None)
    return state


def Cached(data: Any = None, *, message: str | None = None, run_count: int = 0) -> State[Any]:
    return _make(StateType.COMPLETED, "Cached", message, data, run_count=run_count)


def Failed(
    exc: BaseException | None = None,
    *,
    message: str | None = None,
    run_count: int = 1,
    name: str = "Failed",
    traceback: str | None = None,
    data: Any = None,
    start_time: datetime | None = None,
    timestamp: datetime | None = None,
) -> State[Any]:
    """A FAILED state holding ``exc`` (Prefect's ``Failed(data=exc, message=...)`` works too)."""
    if exc is None and data is not None:
        exc = data
    if message is None and exc is not None:
        message = f"{type(exc).__name__}: {exc}"
    return _make(
        StateType.FAILED, name, message, exc, timestamp, run_count=run_count, traceback=traceback, start_time=start_time
    )


def TimedOut(
    exc: BaseException, *, run_count: int = 1, start_time: datetime | None = None, timestamp: datetime | None = None
) -> State[Any]:
    return Failed(exc, run_count=run_count, name="TimedOut", start_time=start_time, timestamp=timestamp)


def NotReady(upstream: str, upstream_state: State[Any]) -> State[Any]:
    """The state of a run that never started because ``upstream`` ended badly."""
    message = f"upstream task run {upstream!r} ended {upstream_state.name}; this run did not start"
    return Failed(UpstreamTaskError(message), message=message, run_count=0, name="NotReady")


def Crashed(
    message: str = "the run was lost", *, exc: BaseException | None = None, run_count: int = 1, data: Any = None
) -> State[Any]:
    exc = exc if exc is not None else data
    return _make(StateType.CRASHED, "Crashed", message, exc or CrashedRunError(message), run_count=run_count)


def Cancelled(message: str = "cancelled", *, run_count: int = 0, data: Any = None) -> State[Any]:
    return _make(StateType.CANCELLED, "Cancelled", message, data or CancelledRunError(message), run_count=run_count)


def Cancelling(message: str | None = None) -> State[Any]:
    return _make(StateType.CANCELLING, "Cancelling", message)


def Paused(message: str | None = None) -> State[Any]:
    return _make(StateType.PAUSED, "Paused", message)


class IllegalTransition(RunError):
    """The engine tried to move a run between two states that do not connect."""


_S = StateType
_ALLOWED: dict[StateType | None, frozenset[StateType]] = {
    None: frozenset({_S.SCHEDULED, _S.PENDING, _S.RUNNING, *_FINAL}),
    _S.SCHEDULED: frozenset({_S.PENDING, _S.RUNNING, *_FINAL}),
    _S.PENDING: frozenset({_S.RUNNING, _S.PAUSED, *_FINAL}),
    _S.RUNNING: frozenset({_S.RUNNING, _S.PAUSED, _S.CANCELLING, *_FINAL}),
    _S.PAUSED: frozenset({_S.RUNNING, _S.CANCELLING, *_BAD}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.CRASHED, _S.COMPLETED, _S.FAILED}),
    # A final run may only start over (a retry of a crashed run, a flow retry).
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset({_S.RUNNING}),
    _S.CRASHED: frozenset({_S.RUNNING}),
    _S.CANCELLED: frozenset(),
}


def check_transition(old: StateType | None, new: StateType) -> None:
    """Raise IllegalTransition unless a run in ``old`` may move to ``new``."""
    if new not in _ALLOWED[old]:
        raise IllegalTransition(f"a run cannot move from {old and old.value} to {new.value}")
