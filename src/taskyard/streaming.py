"""Generator tasks, value by value: drivers that hand each value to the caller as the task yields it.

::

    caller ── for x in drive_stream(steps) ──┐        (async for: drive_stream_async)
        ┌────────────────────────────────────┘
        ▼
    engine (task_steps) ── Invoke(generator=True) ──▶ this driver:
        gen = fn(*args, **kwargs)
        repeat: advance gen within the time left ─▶ yield the value to the caller
        gen ends    ─▶ Outcome(ok, the values) ─▶ engine: cache, hooks, Completed
        gen raises  ─▶ Outcome(failed)  ─▶ engine: retry (the generator starts
                                          over) or Failed / TimedOut

The engine is the same one every runner uses (engine.py); only the driver
differs from execution.py's, which collects a generator's values into a list.
The engine's steps and the generator itself run in a context of their own,
so the caller's code between two values is not inside the task run. The
time limit counts the time spent producing values, not the caller's.
A caller that stops early (``break``) closes the generator and the run
completes. The run's result is the list of the values yielded, in every
driver, so a cached or persisted generator task reads back the same.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

from taskyard.exceptions import TaskTimeoutError
from taskyard.execution import Invoke, Outcome, Sleep, Steps, invoke_async, invoke_sync

if TYPE_CHECKING:
    from taskyard.states import State

__all__ = ("drive_stream", "drive_stream_async")


def drive_stream(steps: Steps[State[Any]], final: list[State[Any]] | None = None) -> Generator[Any, None, State[Any]]:
    """Drive a task's engine, yielding its generator's values; return the final State.

    Async generator functions are advanced on the portal loop. The final
    State is appended to ``final`` too, if given (a caller that stops early
    gets no return value).
    """
    ctx = contextvars.copy_context()
    reply: Outcome | None = None
    while True:
        try:
            effect = ctx.run(steps.send, reply)
        except StopIteration as stop:
            state: State[Any] = stop.value
            if final is not None:
                final.append(state)
            if state.name == "Cached":  # nothing ran: serve the values the cache holds
                yield from state.result()
            return state
        try:
            if isinstance(effect, Sleep):
                time.sleep(effect.seconds)
                reply = None
            elif not effect.generator:
                reply = ctx.run(invoke_sync, effect)
            else:
                reply = yield from _stream(effect, ctx)
        except GeneratorExit:  # the caller stopped early: the run completes
            state = _finish(steps, ctx)
            if final is not None:
                final.append(state)
            return state
        except BaseException:
            steps.close()
            raise


def _stream(effect: Invoke, ctx: contextvars.Context) -> Generator[Any, None, Outcome]:
    try:
        gen = ctx.run(effect.fn, *effect.args, **effect.kwargs)
    except Exception as exc:
        return Outcome(False, exc)
    advance = Invoke(_anext, (gen,), {}, None, effect.run_name, True) if inspect.isasyncgen(gen) else Invoke(next, (gen,), {}, None, effect.run_name, False)
    budget = _Budget(effect)
    values: list[Any] = []
    try:
        while True:
            step = budget.limit(advance)
            outcome = ctx.run(invoke_sync, step) if step is not None else budget.overrun()
            budget.spent()
            if outcome.ok:
                values.append(outcome.value)
                yield outcome.value
                continue
            return _ended(outcome, gen, values)
    except BaseException:
        _close(gen)
        raise


async def drive_stream_async(steps: Steps[State[Any]], final: list[State[Any]] | None = None) -> AsyncGenerator[Any, None]:
    """Drive a task's engine on the running loop, yielding its generator's values.

    Raises the run's exception at the end if it did not complete (an async
    generator has no return value to carry the State); the State is
    appended to ``final`` if given.
    """
    import asyncio

    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    reply: Outcome | None = None
    while True:
        try:
            effect = ctx.run(steps.send, reply)
        except StopIteration as stop:
            ended: State[Any] = stop.value
            break
        try:
            if isinstance(effect, Sleep):
                await asyncio.sleep(effect.seconds)
                reply = None
            elif not effect.generator:
                runs_async = effect.runs_async()
                reply = await loop.create_task(invoke_async(effect), context=ctx) if runs_async else ctx.run(invoke_sync, effect)
            else:
                reply = None
                gen = None
                try:
                    gen = ctx.run(effect.fn, *effect.args, **effect.kwargs)
                except Exception as exc:
                    reply = Outcome(False, exc)
                if gen is not None:
                    budget = _Budget(effect)
                    values: list[Any] = []
                    while reply is None:
                        outcome = await _advance_async(gen, budget, ctx, effect.run_name)
                        if outcome.ok:
                            values.append(outcome.value)
                            try:
                                yield outcome.value
                            except BaseException:
                                await _aclose(gen)
                                raise
                        else:
                            reply = _ended(outcome, gen, values)
        except GeneratorExit:
            state = _finish(steps, ctx)
            if final is not None:
                final.append(state)
            return
        except BaseException:
            steps.close()
            raise
    if final is not None:
        final.append(ended)
    if ended.name == "Cached":
        for value in ended.result():
            yield value
    ended.result()


async def _advance_async(gen: Any, budget: _Budget, ctx: contextvars.Context, name: str) -> Outcome:
    import asyncio

    if inspect.isasyncgen(gen):
        step = budget.limit(Invoke(_anext, (gen,), {}, None, name, True))
        task = asyncio.get_running_loop().create_task(invoke_async(step), context=ctx) if step is not None else None
        outcome = await task if task is not None else budget.overrun()
    else:
        step = budget.limit(Invoke(next, (gen,), {}, None, name, False))
        outcome = ctx.run(invoke_sync, step) if step is not None else budget.overrun()
    budget.spent()
    return outcome


class _Budget:
    """The time a generator may still spend producing values (its timeout_seconds)."""

    def __init__(self, effect: Invoke) -> None:
        self.effect = effect
        self.left = effect.timeout
        self.started = time.monotonic()

    def limit(self, step: Invoke) -> Invoke | None:
        """``step`` with the time left as its limit; None when none is left."""
        self.started = time.monotonic()
        if self.left is None:
            return step
        if self.left <= 0:
            return None
        return Invoke(step.fn, step.args, step.kwargs, self.left, step.run_name, step.is_async)

    def spent(self) -> None:
        if self.left is not None:
            self.left -= time.monotonic() - self.started

    def overrun(self) -> Outcome:
        e = self.effect
        return Outcome(False, TaskTimeoutError(f"{e.run_name!r} exceeded timeout_seconds={e.timeout}"))


async def _anext(gen: Any) -> Any:
    return await gen.__anext__()


def _ended(outcome: Outcome, gen: Any, values: list[Any]) -> Outcome:
    """The Outcome for the engine once advancing ``gen`` did not give a value."""
    if isinstance(outcome.value, (StopIteration, StopAsyncIteration)):
        return Outcome(True, values)
    _close(gen)
    return outcome


def _close(gen: Any) -> None:
    """Close a generator that may still run in an abandoned helper thread (then leave it)."""
    try:
        if inspect.isasyncgen(gen):
            from taskyard.execution import run_coroutine_sync

            run_coroutine_sync(gen.aclose())
        else:
            gen.close()
    except Exception:
        pass


async def _aclose(gen: Any) -> None:
    try:
        if inspect.isasyncgen(gen):
            await gen.aclose()
        else:
            gen.close()
    except Exception:
        pass


def _finish(steps: Steps[State[Any]], ctx: contextvars.Context) -> State[Any]:
    """Complete the run after the caller stopped early (the generator is closed)."""
    reply: Outcome | None = Outcome(True, None)
    while True:
        try:
            effect = ctx.run(steps.send, reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply = ctx.run(invoke_sync, effect) if isinstance(effect, Invoke) else None
