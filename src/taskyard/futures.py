"""Futures for task runs, and ``wait`` / ``as_completed`` over any of them.

A :class:`TaskFuture` is the handle ``submit`` and ``map`` return. Users read it
(``state``, ``done``, ``wait``, ``result``, ``add_done_callback``, ``await``);
only a runner completes it, through ``_set_state`` — the split CPython draws
between ``Future.result`` and ``Future.set_result``. A future's final state is
set once; callbacks run in whichever thread sets it.

The futures of every runner are TaskFutures (a runner may subclass to carry
its backend's native future in ``native``), so ``wait`` and ``as_completed``
accept futures from any mix of runners.
"""

from __future__ import annotations

import logging
import threading
import time
import queue
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from taskyard.states import Pending, State

if TYPE_CHECKING:
    from taskyard.inputs import FutureRef

__all__ = (
    "TaskFuture",
    "FutureList",
    "DoneAndNotDone",
    "wait",
    "as_completed",
    "resolve_futures_to_states",  # noqa: F822 - from __getattr__
    "resolve_futures_to_results",  # noqa: F822 - from __getattr__
)


def __getattr__(name: str) -> Any:
    # Prefect's import path for these two; they walk arguments the way
    # taskyard.inputs (a layer up) does, so they live there.
    if name in ("resolve_futures_to_states", "resolve_futures_to_results"):
        from taskyard import inputs

        return getattr(inputs, name)
    raise AttributeError(f"module 'taskyard.futures' has no attribute {name!r}")

R = TypeVar("R")
logger = logging.getLogger("taskyard.futures")

# One lock for every future: the critical sections are a few attribute writes,
# and one shared lock costs less than a lock per future (10k-task maps).
_LOCK = threading.Lock()


class TaskFuture(Generic[R]):
    """The future result of one task run.

    Attributes:
        task_run_id: The id of the task run.
        task_run_name: Its name (``<task name>-<short id>`` unless set).
        native: The backend's own future (a Dask future, a Ray ObjectRef),
            for runners that have one; None otherwise.
    """

    __slots__ = ("task_run_id", "task_run_name", "native", "_state", "_callbacks", "_event", "__weakref__")
    # A subclass that keeps its callbacks elsewhere than in ``_callbacks`` (taskyard.lanes).
    _own_callbacks = False

    def __init__(self, task_run_id: str, task_run_name: str = "", native: Any = None) -> None:
        self.task_run_id = task_run_id
        self.task_run_name = task_run_name or task_run_id
        self.native = native
        self._state: State[R] | None = None
        self._callbacks: list[Callable[[TaskFuture[R]], object]] | None = None
        self._event: threading.Event | None = None

    def __repr__(self) -> str:
        state = self._state.name if self._state is not None else "Pending"
        return f"<TaskFuture {self.task_run_name} {state}>"

    @property
    def state(self) -> State[R]:
        """The run's final state once done; a Pending state before that."""
        state = self._state
        return state if state is not None else Pending()

    def done(self) -> bool:
        """True once the run has reached a final state."""
        return self._state is not None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run is done or ``timeout`` seconds have passed."""
        if self._state is not None:
            return
        with _LOCK:
            if self._state is not None:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        event.wait(timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Wait for the run and return its result.

        Args:
            timeout: Seconds to wait at most; None waits for as long as it takes.
            raise_on_failure: When False, a failed run returns its exception
                instead of raising it.

        Raises:
            TimeoutError: The run was not done within ``timeout``.
            Exception: The run's own exception, when it failed and
                ``raise_on_failure`` is True.
        """
        self.wait(timeout)
        if not self.done():
            raise TimeoutError(f"task run {self.task_run_name!r} was not done after {timeout} s")
        # Read through `state`: a runner's future may fetch it lazily (Dask).
        return self.state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn: Callable[[TaskFuture[R]], object]) -> None:
        """Call ``fn(future)`` once the run is done (at once if it already is)."""
        with _LOCK:
            if self._state is None:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        _call(fn, self)

    async def wait_async(self, timeout: float | None = None) -> None:
        """:meth:`wait` for async code: ``await future.wait_async()`` (the event loop keeps running)."""
        if self._state is not None:
            return
        import asyncio

        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.add_done_callback(lambda _: loop.call_soon_threadsafe(_settle, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass

    async def result_async(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """:meth:`result` for async code: ``await future.result_async()``.

        Raises:
            TimeoutError: The run was not done within ``timeout``.
            Exception: The run's own exception, when it failed and
                ``raise_on_failure`` is True.
        """
        await self.wait_async(timeout)
        return self.result(timeout=0, raise_on_failure=raise_on_failure)

    def __await__(self) -> Generator[Any, None, R]:
        if self._state is None:
            import asyncio

            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_: TaskFuture[R]) -> None:
                loop.call_soon_threadsafe(_settle, waiter)

            self.add_done_callback(wake)
            yield from waiter.__await__()
        return self.result()

    def _state_name(self) -> str:
        """The name of the state it holds ("Pending" before it is done), read without building a State."""
        state = self._state
        return state.name if state is not None else "Pending"

    def _set_state(self, state: State[R]) -> None:
        """Complete the future. For runners only; a future is completed once.

        Log records the run made in another process (``state.log_records``)
        are replayed here, into this process's loggers.
        """
        state = received_state(state)
        with _LOCK:
            if self._state is not None:
                return
            self._state = state
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        if callbacks:
            for fn in callbacks:
                _call(fn, self)

    def __reduce__(self) -> tuple[Callable[..., FutureRef], tuple[str, str]]:
        # A future never crosses a process boundary; the engine on the other
        # side gets the upstream's state from the runner and finds it by id.
        from taskyard.inputs import FutureRef

        return FutureRef, (self.task_run_id, self.task_run_name)


def received_state(state: State[R]) -> State[R]:
    """A state as it arrives in the flow process: its shipped log records replayed.

    ``_set_state`` does this; a runner that installs a state some other way
    (one fetched lazily from a cluster) calls it on the state first.
    """
    if not state.log_records:
        return state
    from taskyard.logs import replay_records

    replay_records(state.log_records)
    return state.model_copy(update={"log_records": None})


def _settle(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _call(fn: Callable[[Any], object], future: TaskFuture[Any]) -> None:
    try:
        fn(future)
    except Exception:
        logger.exception("done-callback %r of %r raised", fn, future)


def add_done_callbacks(futures: Iterable[TaskFuture[Any]], fn: Callable[[TaskFuture[Any]], object]) -> None:
    """``future.add_done_callback(fn)`` for many futures, taking the futures' lock once.

    A map of 10,000 runs pays one lock, not 10,000 (the progress display
    counts every run of a map this way).
    """
    finished = []
    elsewhere = []
    with _LOCK:
        for future in futures:
            if future._own_callbacks:  # kept elsewhere (a lane's future), under another lock
                elsewhere.append(future)
            elif future._state is None:
                if future._callbacks is None:
                    future._callbacks = [fn]
                else:
                    future._callbacks.append(fn)
            else:
                finished.append(future)
    for future in finished:
        _call(fn, future)
    for future in elsewhere:
        future.add_done_callback(fn)


class FutureList(list[TaskFuture[R]]):
    """The futures of a ``Task.map``, in the order of the mapped items."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every future is done or ``timeout`` seconds have passed."""
        wait(self, timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Wait for every run and return their results in order.

        Raises:
            TimeoutError: Not every run was done within ``timeout``.
            Exception: The first failed run's exception (in list order), when
                ``raise_on_failure`` is True.
        """
        # As wait() does, without building its sets: this is every map's hot path.
        deadline = None if timeout is None else time.monotonic() + timeout
        for future in self:
            if not future.done():
                future.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if not future.done():
                    not_done = sum(1 for f in self if not f.done())
                    raise TimeoutError(f"{not_done} of {len(self)} task runs were not done after {timeout} s")
        return [f.result(raise_on_failure=raise_on_failure) for f in self]


class DoneAndNotDone(NamedTuple):
    done: set[TaskFuture[Any]]
    not_done: set[TaskFuture[Any]]


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> DoneAndNotDone:
    """Wait for futures (from any runner) to finish.

    Returns:
        ``(done, not_done)``: two sets; ``not_done`` is empty unless the
        timeout passed first.
    """
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    for fut in futures:
        if fut.done():
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        fut.wait(remaining)
        if not fut.done():
            break
    done = {f for f in futures if f.done()}
    return DoneAndNotDone(done, {f for f in futures if f not in done})


def as_completed(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> Iterator[TaskFuture[Any]]:
    """Yield futures (from any runner) as they finish.

    Raises:
        TimeoutError: ``timeout`` seconds passed before all had finished.
    """
    pending = set(futures)
    finished: queue.SimpleQueue[TaskFuture[Any]] = queue.SimpleQueue()
    for fut in pending:
        fut.add_done_callback(finished.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        try:  # what is done already is yielded even when the time is up (timeout=0)
            fut = finished.get_nowait()
        except queue.Empty:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{len(pending)} futures were not done after {timeout} s") from None
            try:
                fut = finished.get(timeout=remaining)
            except queue.Empty:
                continue
        if fut in pending:
            pending.discard(fut)
            yield fut
