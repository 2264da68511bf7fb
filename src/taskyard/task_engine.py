"""Run one task through the engine from any code, as ``prefect.task_engine`` does.

::

    run_task ─┬─ async generator function → run_generator_task_async
              ├─ generator function       → run_generator_task_sync
              ├─ async function           → run_task_async
              └─ otherwise                → run_task_sync
    each one: a TaskCall (parameters, a run identity, the flow run found in
              the context or given in ``context``, the futures found in the
              parameters and ``wait_for``), upstreams waited for, then
              the one engine (engine.task_steps) with a driver:
                 TaskCall.run / run_async  — what every runner's worker calls
                 streaming.drive_stream(_async) — values as they are yielded

These are thin entry points, not a second engine: retries, timeouts, cache,
persistence and hooks are those of a task run anywhere else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from taskyard.context import FlowRunInfo, TaskRunInfo, current_tags, flow_run_var, flow_state_var
from taskyard.dispatch import new_run_id
from taskyard.engine import TaskCall, task_steps
from taskyard.futures import TaskFuture
from taskyard.inputs import Upstream, find_upstreams, pending_futures
from taskyard.states import State
from taskyard.streaming import drive_stream, drive_stream_async
from taskyard.transactions import open_transaction

if TYPE_CHECKING:
    from taskyard.tasks import Task

__all__ = ("run_task", "run_task_sync", "run_task_async", "run_generator_task_sync", "run_generator_task_async")

ReturnType = Literal["state", "result"]
_CONTEXT_KEYS = frozenset({"flow_run", "tags"})


def run_task(
    task: Task[..., Any],
    task_run_id: UUID | str | None = None,
    task_run: TaskRunInfo | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    return_type: ReturnType = "result",
    dependencies: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``task`` once through the engine: its retries, timeout, cache and hooks apply.

    Picks the entry point for the kind of function: a coroutine to await
    for an async task, a generator for a generator task.

    Args:
        task: The task to run.
        task_run_id: The id to give the run (a new one if None).
        task_run: The run's identity, when the caller made it already.
        parameters: The arguments by parameter name; futures and States
            in them are resolved first.
        wait_for: Futures to wait for before running (their results are not
            passed).
        return_type: ``"result"`` (raise on failure) or ``"state"``.
        dependencies: Accepted for compatibility; taskyard finds the
            dependencies in ``parameters`` itself.
        context: ``{"flow_run": FlowRunInfo, "tags": [...]}`` for a run made
            away from its flow (a remote worker); by default the flow run
            and tags of the calling code.

    Returns:
        The result, or the final State with ``return_type="state"``.

    Raises:
        Exception: The task's own exception when it failed and
            ``return_type`` is ``"result"``.
    """
    kwargs = {
        "task_run_id": task_run_id,
        "task_run": task_run,
        "parameters": parameters,
        "wait_for": wait_for,
        "return_type": return_type,
        "dependencies": dependencies,
        "context": context,
    }
    if task.isgenerator:
        if _is_async_generator(task):
            return run_generator_task_async(task, **kwargs)
        return run_generator_task_sync(task, **kwargs)
    if task.is_async:
        return run_task_async(task, **kwargs)
    return run_task_sync(task, **kwargs)


def run_task_sync(
    task: Task[..., Any],
    task_run_id: UUID | str | None = None,
    task_run: TaskRunInfo | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    return_type: ReturnType = "result",
    dependencies: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``task`` in this thread (see :func:`run_task`); async functions run on the portal loop.

    A generator task's result is the list of the values it yielded.
    """
    call, ups = _prepare(task, task_run_id, task_run, parameters, wait_for, return_type, context)
    for future in pending_futures(ups):
        future.wait()
    return _unwrap(_noted(call, call.run()), return_type)


async def run_task_async(
    task: Task[..., Any],
    task_run_id: UUID | str | None = None,
    task_run: TaskRunInfo | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    return_type: ReturnType = "result",
    dependencies: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``task`` on the running event loop (see :func:`run_task`)."""
    call, ups = _prepare(task, task_run_id, task_run, parameters, wait_for, return_type, context)
    await _wait_async(ups)
    return _unwrap(_noted(call, await call.run_async()), return_type)


def run_generator_task_sync(
    task: Task[..., Any],
    task_run_id: UUID | str | None = None,
    task_run: TaskRunInfo | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    return_type: ReturnType = "result",
    dependencies: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Generator[Any, None, None]:
    """Run a generator task, yielding its values as it produces them, while the run is Running.

    The run completes when the generator ends (or the caller stops
    iterating); if it fails after its retries, iterating raises its
    exception. A retry starts the generator over, so its values come again.

    Raises:
        ValueError: ``return_type`` is not ``"result"``.
    """
    call, ups = _prepare(task, task_run_id, task_run, parameters, wait_for, return_type, context, streaming=True)
    return stream_call_sync(call, ups)


def run_generator_task_async(
    task: Task[..., Any],
    task_run_id: UUID | str | None = None,
    task_run: TaskRunInfo | None = None,
    parameters: dict[str, Any] | None = None,
    wait_for: Any = None,
    return_type: ReturnType = "result",
    dependencies: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> AsyncGenerator[Any, None]:
    """Like :func:`run_generator_task_sync`, as an async generator (``async for``).

    Raises:
        ValueError: ``return_type`` is not ``"result"``.
    """
    call, ups = _prepare(task, task_run_id, task_run, parameters, wait_for, return_type, context, streaming=True)
    return stream_call_async(call, ups)


def stream_call_sync(call: TaskCall[Any], ups: list[Upstream]) -> Generator[Any, None, None]:
    """Wait for the upstreams, then run a generator task's call, yielding its values."""
    for future in pending_futures(ups):
        future.wait()
    final: list[State[Any]] = []
    try:
        yield from drive_stream(task_steps(call), final)
    finally:
        if final:
            _noted(call, final[0])
    final[0].result()  # raises the run's exception if it failed


async def stream_call_async(call: TaskCall[Any], ups: list[Upstream]) -> AsyncGenerator[Any, None]:
    """Like :func:`stream_call_sync`, on the running event loop."""
    await _wait_async(ups)
    final: list[State[Any]] = []
    try:
        async for value in drive_stream_async(task_steps(call), final):
            yield value
    finally:
        if final:
            _noted(call, final[0])


def _prepare(
    task: Task[..., Any],
    task_run_id: UUID | str | None,
    task_run: TaskRunInfo | None,
    parameters: dict[str, Any] | None,
    wait_for: Any,
    return_type: str,
    context: Mapping[str, Any] | None,
    streaming: bool = False,
) -> tuple[TaskCall[Any], list[Upstream]]:
    if return_type not in ("result", "state"):
        raise ValueError(f"return_type must be 'result' or 'state', not {return_type!r}")
    if streaming and return_type != "result":
        raise ValueError(
            f"a generator task ({task.name!r}) yields its values, it has no State to return: use "
            "return_type='result', or run_task_sync(...) for a State whose result is the list of values"
        )
    params = task.binder.bind((), dict(parameters or {})) if task.binder.simple else dict(parameters or {})
    ups = find_upstreams(params)
    if wait_for is not None:
        find_upstreams(wait_for, ups)
    flow_run, tags = _context(context)
    if task_run is None:
        run_id = str(task_run_id.hex if isinstance(task_run_id, UUID) else task_run_id or new_run_id())
        dispatcher = getattr(flow_state_var.get(), "dispatcher", None)
        if dispatcher is not None and context is None and task_run_id is None:
            task_run = dispatcher.task_run(task, params)
        else:
            flow_run_id = flow_run.id if flow_run is not None else None
            task_run = TaskRunInfo(run_id, task.run_name(params, run_id), task.name, tags | frozenset(task.tags), flow_run_id=flow_run_id)
            txn = open_transaction()
            task_run.transaction = txn.id if txn is not None else None
    return TaskCall(task, params, task_run, flow_run, ups), ups


def _context(context: Mapping[str, Any] | None) -> tuple[FlowRunInfo | None, frozenset[str]]:
    if context is None:
        return flow_run_var.get(), current_tags()
    unknown = set(context) - _CONTEXT_KEYS
    if unknown:
        raise ValueError(f"context has unknown key(s) {sorted(unknown)}; it takes {sorted(_CONTEXT_KEYS)}")
    flow_run = context.get("flow_run")
    if flow_run is not None and not isinstance(flow_run, FlowRunInfo):
        raise TypeError(f"context['flow_run'] must be a FlowRunInfo (get_run_context().flow_run), not {flow_run!r}")
    return flow_run, frozenset(context.get("tags") or ())


async def _wait_async(ups: list[Upstream]) -> None:
    for upstream in ups:
        future = upstream.future
        if isinstance(future, TaskFuture) and not future.done():
            try:
                await future
            except BaseException:  # only waiting; the engine reads the state
                pass


def _noted(call: TaskCall[Any], state: State[Any]) -> State[Any]:
    txn = open_transaction()
    if txn is not None:
        txn.note_run(call.task, call.task_run, state)
    return state


def _unwrap(state: State[Any], return_type: str) -> Any:
    return state if return_type == "state" else state.result()


def _is_async_generator(task: Task[..., Any]) -> bool:
    import inspect

    return inspect.isasyncgenfunction(task.fn)
