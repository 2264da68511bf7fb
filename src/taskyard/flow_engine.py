"""The engine of one flow run: its steps (body, retries, hooks) and how it ends.

::

    Flow.__call__ (flows.py) ─ a FlowRunState ─▶ flow_steps, driven by execution.drive:
       Invoke(attempt) ── the body runs with the run context set; submit/map go
                          to the Dispatcher; then every submitted future is
                          waited on
       judge ── raised → Failed; returned a failed future/state → Failed;
                otherwise Completed with futures in the value resolved
       hooks ── on_running before, on_completion / on_failure after
    then close_run: the runner shut down (outstanding work cancelled if the run
    did not complete), the report and the run record end;
    or abort_run (Ctrl-C, a lost run): cancel, on_cancellation / on_crashed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskyard import flowrecord
from taskyard.context import FlowRunInfo, flow_run_var, flow_state_var, task_run_var
from taskyard.dispatch import Dispatcher
from taskyard.engine import failed_state, hook_steps, retry_loop, run_hooks
from taskyard.execution import Invoke, Outcome, Steps
from taskyard.interrupts import shielded
from taskyard.logs import printing_to, reset_printing
from taskyard.reporting import FlowRunReport
from taskyard.returns import state_from_return
from taskyard.settings import current_settings
from taskyard.states import Cancelled, Crashed, Failed, Running, State

if TYPE_CHECKING:
    from taskyard.flows import Flow

__all__ = ("FlowRunState", "flow_steps", "finish_run", "close_run", "abort_run")


@dataclass(frozen=True, slots=True)
class FlowRunState:
    """What a flow body's submissions need: found through the run context."""

    flow: Flow[..., Any]
    info: FlowRunInfo
    dispatcher: Dispatcher
    report: FlowRunReport



def flow_steps(run: FlowRunState) -> Steps[State[Any]]:
    """The engine for one flow run, as a generator of effects."""
    flow, info, dispatcher = run.flow, run.info, run.dispatcher
    args, kwargs = flow.binder.split(info.parameters)
    invoke = Invoke(_attempt(flow, dispatcher), args, kwargs, flow.timeout_seconds, info.name, flow.is_async)
    flow_token = flow_run_var.set(info)
    state_token = flow_state_var.set(run)
    task_token = task_run_var.set(None)  # a flow called inside a task is not inside that task
    # An explicit log_prints=False opts out even inside a log_prints=True run.
    print_token = printing_to(flow.log_prints) if flow.log_prints is not None else None
    try:
        yield from hook_steps(flow.on_running, flow, info, Running())
        state = yield from retry_loop(flow, info, invoke, _judge, lambda _: dispatcher.cancel_reason is None)
        if dispatcher.cancel_reason is not None:
            state = Cancelled(dispatcher.cancel_reason, run_count=state.run_count)
        elif state.is_completed() and info.persist_results:
            state = _persist(flow, info, state)
    finally:
        if print_token is not None:
            reset_printing(print_token)
        task_run_var.reset(task_token)
        flow_state_var.reset(state_token)
        flow_run_var.reset(flow_token)
    hooks = flow.on_cancellation if state.is_cancelled() else flow.on_completion if state.is_completed() else flow.on_failure
    yield from hook_steps(hooks, flow, info, state)
    return state


def _persist(flow: Flow[..., Any], info: FlowRunInfo, state: State[Any]) -> State[Any]:
    from taskyard.results import encode, get_serializer, get_storage

    storage = get_storage(flow.result_storage, info.home or current_settings().home)
    try:
        location = storage.write(f"flow-runs/{info.id}", encode(state.data, get_serializer(flow.result_serializer)))
    except Exception as exc:
        return Failed(exc, message=f"the flow result could not be persisted: {exc}", run_count=state.run_count)
    return state.model_copy(update={"result_location": location})


def _attempt(flow: Flow[..., Any], dispatcher: Dispatcher) -> Callable[..., Any]:
    if flow.is_async:

        async def attempt_async(*args: Any, **kwargs: Any) -> Any:
            import asyncio

            result = await flow.fn(*args, **kwargs)
            await asyncio.to_thread(dispatcher.wait_all)
            return result

        return attempt_async

    def attempt(*args: Any, **kwargs: Any) -> Any:
        result = flow.fn(*args, **kwargs)
        dispatcher.wait_all()
        return result

    return attempt


def _judge(outcome: Outcome, run_count: int, started: datetime) -> State[Any]:
    if not outcome.ok:
        return failed_state(outcome.value, run_count, start_time=started)
    try:
        state = state_from_return(outcome.value, run_count)
    except Exception as exc:  # an upstream's result could not be loaded
        message = f"the flow returned a run that did not complete: {exc}"
        return Failed(exc, message=message, run_count=run_count, start_time=started)
    return state if state.start_time is not None else state.model_copy(update={"start_time": started})


def finish_run(run: FlowRunState, drive_run: Callable[[], State[Any]]) -> State[Any]:
    try:
        state = drive_run()
    except BaseException as exc:
        with shielded():
            abort_run(run, exc)
        raise
    close_run(run, state)
    return state


def close_run(run: FlowRunState, state: State[Any]) -> None:
    runner = run.dispatcher.runner
    if state.is_completed():
        runner.shutdown(wait=True)
    else:  # failed or timed out: what is still outstanding is not wanted
        runner.shutdown(wait=False, cancel_pending=True)
    run.report.end(state, run.dispatcher.state_names())
    flowrecord.end(run.dispatcher, run.info, state)


def abort_run(run: FlowRunState, exc: BaseException) -> None:
    """Ctrl-C (or another BaseException) in a flow run: cancel its work, run its hooks."""
    run.report.abort(exc)
    flow, info = run.flow, run.info
    cancelled_error = getattr(sys.modules.get("asyncio"), "CancelledError", KeyboardInterrupt)
    if isinstance(exc, (KeyboardInterrupt, cancelled_error)):
        run.dispatcher.cancel(f"interrupted: {type(exc).__name__}")
        state = Cancelled(run.dispatcher.cancel_reason or "interrupted", run_count=info.run_count)
        run_hooks(flow.on_cancellation, flow, info, state)
    else:
        run.dispatcher.runner.shutdown(wait=False, cancel_pending=True)
        state = Crashed(f"the flow run was lost: {exc!r}", exc=exc, run_count=info.run_count)
        run_hooks(flow.on_crashed, flow, info, state)
    flowrecord.end(run.dispatcher, info, state)
