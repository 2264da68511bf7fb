"""How the engine calls user code: in this thread, on an event loop, with a time limit.

The engine (engine.py) is one generator for sync and async runs alike. It
yields *effects* — :class:`Invoke` (call the user's function) and
:class:`Sleep` (wait before a retry) — and a driver carries them out:
:func:`drive` in a plain thread, :func:`drive_async` on a running event loop.
This module holds the two drivers and what they need:

* an event loop in a background thread (the *portal*), on which a sync
  driver runs async task functions, one per process, started on first use;
* time limits. A coroutine is cancelled (``asyncio.wait_for``). Sync code in
  the main thread of a process (a process-pool worker, a script) gets
  SIGALRM, which interrupts ``time.sleep`` and most blocking calls. Sync code
  in any other thread runs in a helper thread that is abandoned at the
  deadline: the run ends TimedOut at once, an exception is injected into the
  helper so pure-Python code stops at its next bytecode, and whatever the
  code returns later is discarded.
"""

from __future__ import annotations

import contextvars
import ctypes
import inspect
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from taskyard.exceptions import TaskTimeoutError
from taskyard.states import async_code_var

if TYPE_CHECKING:  # asyncio is imported where async code runs, not at import time
    import asyncio

__all__ = ("Invoke", "Sleep", "Outcome", "drive", "drive_async", "run_coroutine_sync", "invoke_sync", "invoke_async")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Invoke:
    """Call ``fn(*args, **kwargs)``, within ``timeout`` seconds if one is given."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    timeout: float | None = None
    run_name: str = ""  # named in the timeout error
    is_async: bool | None = None  # None: look at fn
    generator: bool = False  # fn is a (sync or async) generator function

    def runs_async(self) -> bool:
        return self.is_async if self.is_async is not None else inspect.iscoroutinefunction(self.fn)

    def collecting(self) -> Invoke:
        """This call of a generator function as one that returns the list of its values.

        The drivers below run generator tasks this way (a runner's worker, a
        call that wants a State); streaming.py drives them item by item.
        The time limit covers the whole iteration.
        """
        fn = self.fn
        if inspect.isasyncgenfunction(fn):

            async def collect_async(*args: Any, **kwargs: Any) -> list[Any]:
                return [item async for item in fn(*args, **kwargs)]

            return replace(self, fn=collect_async, is_async=True, generator=False)

        def collect(*args: Any, **kwargs: Any) -> list[Any]:
            return list(fn(*args, **kwargs))

        return replace(self, fn=collect, is_async=False, generator=False)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before going on."""

    seconds: float


Effect = Invoke | Sleep


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an Invoke came to: a value, or the exception it raised."""

    ok: bool
    value: Any


Steps = Generator[Effect, Outcome | None, T]


def drive(steps: Steps[T]) -> T:
    """Run an engine generator to its end in the calling thread.

    If carrying out an effect raises (Ctrl-C, a cancellation), the generator
    is closed at once, so its cleanup (resetting the run context) happens
    here, in this context, before the exception goes on.
    """
    reply: Outcome | None = None
    try:
        while True:
            effect = steps.send(reply)
            try:
                if isinstance(effect, Invoke):
                    reply = _invoke_sync(effect.collecting() if effect.generator else effect)
                else:
                    time.sleep(effect.seconds)
                    reply = None
            except BaseException:
                steps.close()
                raise
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(steps: Steps[T]) -> T:
    """Run an engine generator to its end on the running event loop."""
    import asyncio

    reply: Outcome | None = None
    try:
        while True:
            effect = steps.send(reply)
            try:
                if isinstance(effect, Invoke):
                    if effect.generator:
                        effect = effect.collecting()
                    if effect.runs_async():
                        reply = await _invoke_async(effect)
                    else:
                        reply = _invoke_sync(effect)
                else:
                    await asyncio.sleep(effect.seconds)
                    reply = None
            except BaseException:
                steps.close()
                raise
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _timeout_error(effect: Invoke) -> TaskTimeoutError:
    return TaskTimeoutError(f"{effect.run_name!r} exceeded timeout_seconds={effect.timeout}")


async def _invoke_async(effect: Invoke) -> Outcome:
    # This task's context only: asyncio gives every task its own copy.
    token = async_code_var.set(True)
    try:
        return await _await_user_code(effect)
    finally:
        async_code_var.reset(token)


async def _await_user_code(effect: Invoke) -> Outcome:
    import asyncio

    try:
        coro = effect.fn(*effect.args, **effect.kwargs)
        if effect.timeout is None:
            return Outcome(True, await coro)
        started = time.monotonic()
        try:
            value = await asyncio.wait_for(coro, effect.timeout)
        except TimeoutError:
            return Outcome(False, _timeout_error(effect))
        # Code that blocked the event loop cannot be cancelled in time; it
        # still ends TimedOut (late) rather than Completed.
        if time.monotonic() - started > effect.timeout:
            return Outcome(False, _timeout_error(effect))
        return Outcome(True, value)
    except Exception as exc:
        return Outcome(False, exc)


def invoke_sync(effect: Invoke) -> Outcome:
    """Carry out one Invoke in this thread (an async function on the portal loop)."""
    return _invoke_sync(effect)


async def invoke_async(effect: Invoke) -> Outcome:
    """Carry out one Invoke of an async function on the running loop, within its time limit."""
    return await _invoke_async(effect)


def _invoke_sync(effect: Invoke) -> Outcome:
    if effect.runs_async():
        return run_coroutine_sync(_invoke_async(effect))
    if async_code_var.get():  # sync code called from async code: State.result() gives values there
        token = async_code_var.set(False)
        try:
            return _invoke_sync(effect)
        finally:
            async_code_var.reset(token)
    if effect.timeout is None:
        try:
            return Outcome(True, effect.fn(*effect.args, **effect.kwargs))
        except (Exception, SystemExit) as exc:  # sys.exit() in a task fails that task
            return Outcome(False, exc)
    if _alarm_usable():
        return _invoke_with_alarm(effect)
    return _invoke_in_helper_thread(effect)


# -- the portal: one event loop in a background thread --------------------------

_portal_lock = threading.Lock()
_portal_loop: asyncio.AbstractEventLoop | None = None


def _portal() -> asyncio.AbstractEventLoop:
    import asyncio

    global _portal_loop
    with _portal_lock:
        if _portal_loop is None or _portal_loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="taskyard-portal", daemon=True)
            thread.start()
            _portal_loop = loop
        return _portal_loop


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the portal loop and block until it is done.

    The coroutine sees the caller's context variables (its run context).
    """
    loop = _portal()
    done: Future[T] = Future()
    ctx = contextvars.copy_context()

    def start() -> None:
        task = loop.create_task(coro, context=ctx)
        task.add_done_callback(lambda t: _copy_outcome(t, done))

    loop.call_soon_threadsafe(start)
    return done.result()


def _copy_outcome(task: asyncio.Task[T], done: Future[T]) -> None:
    import asyncio

    if task.cancelled():
        done.set_exception(asyncio.CancelledError())
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())


# -- time limits for sync code ---------------------------------------------------


def _alarm_usable() -> bool:
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    )


class _Alarm(BaseException):
    """Raised by the SIGALRM handler; a BaseException so user code cannot swallow it."""


def _invoke_with_alarm(effect: Invoke) -> Outcome:
    # The alarm may fire at any bytecode: before the call starts, after it
    # returned, while the timer is being disarmed. `armed` makes a late alarm
    # harmless, the outer `except _Alarm` catches one that lands in our own
    # code, and `fired` catches user code that swallowed the _Alarm (a bare
    # `except BaseException`) or replaced the SIGALRM handler: the elapsed
    # time decides then.
    armed, fired = [True], [False]

    def on_alarm(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            fired[0] = True
            raise _Alarm

    outcome: Outcome | None = None
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, effect.timeout or 0.0)
            outcome = Outcome(True, effect.fn(*effect.args, **effect.kwargs))
        except _Alarm:
            outcome = Outcome(False, _timeout_error(effect))
        except (Exception, SystemExit) as exc:
            outcome = Outcome(False, exc)
        finally:
            armed[0] = False
    except _Alarm:  # fired between the call's end and `armed[0] = False`
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    overran = fired[0] or time.monotonic() - started > (effect.timeout or 0.0)
    if outcome is None or (overran and outcome.ok):
        return Outcome(False, _timeout_error(effect))
    return outcome


def _invoke_in_helper_thread(effect: Invoke) -> Outcome:
    box: list[Outcome] = []
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box.append(Outcome(True, ctx.run(effect.fn, *effect.args, **effect.kwargs)))
        except _Alarm:
            pass
        except BaseException as exc:  # reported to the engine as the outcome
            box.append(Outcome(False, exc))

    helper = threading.Thread(target=target, name="taskyard-timeout-helper", daemon=True)
    helper.start()
    helper.join(effect.timeout)
    if box:
        return box[0]
    # The code overran: stop it at its next bytecode if it is running Python;
    # if it is blocked in C, it finishes later and its result is dropped.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(helper.ident or 0), ctypes.py_object(_Alarm))
    return Outcome(False, _timeout_error(effect))
