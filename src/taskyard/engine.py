"""The engine: one task call (or one flow attempt) in, one final State out.

::

    runner ──ships──▶ TaskCall ──run()──▶ task_steps ──yields──▶ driver
                      (task, parameters,   │ resolve upstream    (execution.py:
                       task_run info,      │   states (native)    call fn in this
                       flow_run info,      │ retry_loop:          thread / on a
                       upstreams)          │   Invoke ─▶ Outcome  loop / with a
                                           │   Sleep (backoff)    time limit)
                                           │ hooks
                                           ▼
                                      final State ──▶ runner sets the future

The engine runs wherever the runner puts the call (the flow's thread, a pool
thread, another process, a cluster worker), so retries, time limits and hooks
never round-trip through the flow process. It is written once, as a
generator of effects, and driven synchronously or on an event loop.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from taskyard.context import FlowRunInfo, TaskRunInfo, flow_run_var, task_run_var
from taskyard.exceptions import TaskTimeoutError
from taskyard.caching import NONE
from taskyard.execution import Invoke, Outcome, Sleep, Steps, drive, drive_async
from taskyard.inputs import Upstream, first_blocking_failure, local_lookup, mapping_lookup, resolve
from taskyard.logs import LogCapture, RunLoggerAdapter, printing_to, reset_printing, run_extra
from taskyard.options import raw_hooks
from taskyard.persistence import MISS, result_plan
from taskyard.states import Cached, Completed, Failed, Retrying, State, TimedOut, async_code_var, check_transition

if TYPE_CHECKING:
    from taskyard.tasks import Task

__all__ = ("TaskCall", "task_steps", "retry_loop", "hook_steps", "run_hooks", "retry_delay", "failed_state", "call_once")

R = TypeVar("R")
logger = logging.getLogger("taskyard.engine")
# Runs of a map past this index log their retries and failures at DEBUG: a
# large map is summarised by its flow run, not logged run by run.
MAP_LOG_LIMIT = 10


class TaskCall(Generic[R]):
    """One prepared run of a task: the unit a runner places and runs.

    A TaskCall pickles (with cloudpickle) to whatever process runs it. Its
    ``parameters`` hold plain values, except for runners that resolve
    dependencies natively: then they may hold futures, listed in
    ``upstreams``, whose final states the runner passes to :meth:`run`.

    Attributes:
        task: The task to run.
        parameters: Its bound arguments, by parameter name.
        task_run: The identity of this run (id, name, tags, map index).
        flow_run: The flow run it belongs to, if any.
        upstreams: The futures the parameters (and ``wait_for``) refer to;
            empty once the dispatcher has resolved them.
    """

    __slots__ = ("task", "parameters", "task_run", "flow_run", "upstreams")

    def __init__(
        self,
        task: Task[..., R],
        parameters: dict[str, Any],
        task_run: TaskRunInfo,
        flow_run: FlowRunInfo | None = None,
        upstreams: Sequence[Upstream] = (),
    ) -> None:
        self.task = task
        self.parameters = parameters
        self.task_run = task_run
        self.flow_run = flow_run
        self.upstreams = upstreams

    def __repr__(self) -> str:
        return f"<TaskCall {self.task_run.name}>"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.task, self.parameters, self.task_run, self.flow_run, tuple(self.upstreams))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.task, self.parameters, self.task_run, self.flow_run, ups = state
        self.upstreams = tuple(Upstream(*u) for u in ups)

    @property
    def upstream_ids(self) -> list[str]:
        """The task run ids of the upstreams, in order (repeats removed)."""
        return list(dict.fromkeys(u.future.task_run_id for u in self.upstreams if not isinstance(u.future, State)))

    def run(self, upstream_states: Mapping[str, State[Any]] | None = None) -> State[R]:
        """Run the call to a final state in this thread.

        Args:
            upstream_states: The final states of ``upstreams`` by task run id,
                for runners that resolve dependencies natively. Local runners
                pass nothing: the upstream futures are read directly.
        """
        if not self.upstreams and _is_plain(self.task):
            state = _run_plain(self)
            if state is not None:
                return state
        return drive(task_steps(self, upstream_states))

    async def run_async(self, upstream_states: Mapping[str, State[Any]] | None = None) -> State[R]:
        """Like :meth:`run`, on the running event loop (async task functions are awaited there)."""
        return await drive_async(task_steps(self, upstream_states))


def _is_plain(task: Task[..., Any]) -> bool:
    """True for a sync task with no retries, timeout, cache, hooks or print capture of its own."""
    # The options as set_options stored them, read from the instance dict at
    # once: this runs for every call (raw_hooks says where hooks are kept).
    options = task.__dict__
    try:
        return not (
            options["is_async"]
            or options["isgenerator"]
            or options["retries"]
            or options["timeout_seconds"] is not None
            or options["cache_key_fn"] is not None
            or (options["cache_policy"] is not None and options["cache_policy"] is not NONE)
            or options["log_prints"] is not None
            or options.get("_on_completion_hooks")
            or options.get("_on_failure_hooks")
        )
    except KeyError:  # a task whose options live elsewhere (a subclass's properties)
        return not (
            task.is_async
            or task.isgenerator
            or task.retries
            or task.timeout_seconds is not None
            or task.cache_key_fn is not None
            or (task.cache_policy is not None and task.cache_policy is not NONE)
            or task.log_prints is not None
            or raw_hooks(task, "on_completion")
            or raw_hooks(task, "on_failure")
        )


def _run_plain(call: TaskCall[R]) -> State[R] | None:
    """The engine's fast path: what ``task_steps`` does for a plain task, without the generator.

    A task with no retries, timeout, cache or hooks (see :func:`_is_plain`)
    and nothing to persist is one attempt: call the function, judge the
    outcome. In a worker process (a process pool's, a cluster's) the run's
    log records are captured as the full engine does. Returns None when the
    call needs the full engine after all (a result to persist, prints to
    capture, sync code called from async code).
    """
    task, info, params, flow_run = call.task, call.task_run, call.parameters, call.flow_run
    if flow_run is not None and flow_run.log_prints:
        return None
    remote = flow_run is not None and flow_run.pid not in (0, _PID[0])
    if async_code_var.get():
        return None
    try:
        if result_plan(call, params) is not None:
            return None
    except Exception:
        return None  # the full engine reports it
    info.parameters = params
    if info.started is None:
        info.started = time.time()
    info.state_type, info.state_name = "RUNNING", "Running"
    task_token = task_run_var.set(info)
    flow_token = flow_run_var.set(flow_run) if flow_run is not None else None
    capture = LogCapture(flow_run.log_level) if remote else None  # type: ignore[union-attr]
    if capture is not None:
        capture.__enter__()
    try:
        info.run_count += 1
        args, kwargs = task.split_parameters(params)
        value, ok = call_once(task.fn, args, kwargs, info)
        started = datetime.fromtimestamp(info.started, UTC)
        # One clock reading for the state and the run's end: the run store
        # records info.started/ended of a run whose ``final`` is its state.
        ended = time.time()
        at = datetime.fromtimestamp(ended, UTC)
        if ok:
            state: State[R] = Completed(value, run_count=info.run_count, start_time=started, timestamp=at)
        else:
            state = failed_state(value, info.run_count, remote=remote, start_time=started, timestamp=at)
        # (state.type.value is an enum property read: slow on the hot path)
        info.state_type = "COMPLETED" if ok else state.type._value_
        info.state_name, info.ended, info.final = state.name, ended, state
        if not ok:
            _log_failure(info, state)
    finally:
        if capture is not None:
            capture.__exit__()
        if flow_token is not None:
            flow_run_var.reset(flow_token)
        task_run_var.reset(task_token)
    if capture is not None and capture.records:
        state = state.model_copy(update={"log_records": tuple(capture.records)})
    return state


def call_once(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], info: TaskRunInfo) -> tuple[Any, bool]:
    """One attempt of a plain task: ``(result, True)``, or ``(exception, False)`` when it raised.

    ``sys.exit()`` in a task fails that task. Runs the attempt submitted
    (taskyard.nested) are waited for before it counts as ended.
    """
    try:
        value, ok = fn(*args, **kwargs), True
    except (Exception, SystemExit) as exc:
        value, ok = exc, False
    nested = info.nested
    if nested is not None:
        info.nested = None
        nested.close(ok)
    return value, ok


# The process id, read once (the flow process's own runs need no log capture).
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class _RetryPolicy(Protocol):
    retries: int
    retry_delay_seconds: float | Sequence[float]
    retry_jitter_factor: float | None


def task_steps(call: TaskCall[R], upstream_states: Mapping[str, State[Any]] | None = None) -> Steps[State[R]]:
    """The engine for one task call, as a generator of effects (see module doc)."""
    task, info, params, flow_run = call.task, call.task_run, call.parameters, call.flow_run
    if call.upstreams:
        lookup = local_lookup if upstream_states is None else mapping_lookup(upstream_states)
        blocked = first_blocking_failure(call.upstreams, lookup)
        if blocked is not None:
            return blocked
        try:
            params = resolve(params, lookup)
        except Exception as exc:  # an upstream's result could not be loaded
            return failed_state(exc, 0)
    remote = flow_run is not None and flow_run.pid not in (0, os.getpid())
    capture = LogCapture(flow_run.log_level) if remote else None  # type: ignore[union-attr]
    log_prints = task.log_prints if task.log_prints is not None else bool(flow_run and flow_run.log_prints)
    info.parameters = params
    if info.started is None:
        info.started = time.time()
    info.state_type, info.state_name = "RUNNING", "Running"
    task_token = task_run_var.set(info)
    flow_token = flow_run_var.set(flow_run) if flow_run is not None else None
    # An explicit log_prints=False opts out even inside a log_prints=True run.
    print_token = printing_to(log_prints) if log_prints or task.log_prints is not None else None
    if capture is not None:
        capture.__enter__()
    try:
        state = yield from _run_task(call, params, remote)
        info.state_type, info.state_name, info.ended = state.type.value, state.name, time.time()
        if state.is_completed():
            hooks = raw_hooks(task, "on_completion")
        else:
            _log_failure(info, state)
            hooks = raw_hooks(task, "on_failure")
        if hooks:
            yield from hook_steps(hooks, task, info, state)
    finally:
        if capture is not None:
            capture.__exit__()
        if print_token is not None:
            reset_printing(print_token)
        if flow_token is not None:
            flow_run_var.reset(flow_token)
        task_run_var.reset(task_token)
    if capture is not None and capture.records:
        state = state.model_copy(update={"log_records": tuple(capture.records)})
    return state


def _run_task(call: TaskCall[R], params: dict[str, Any], remote: bool) -> Steps[State[R]]:
    """Cache lookup, the attempts, and persisting the result."""
    task, info = call.task, call.task_run
    try:
        plan = result_plan(call, params)
    except Exception as exc:
        return Failed(exc, run_count=0)
    if plan is not None:
        cached = plan.lookup()
        if cached is not MISS:
            return Cached(cached, message=f"cache hit for key {plan.cache_key}")
    args, kwargs = task.split_parameters(params)
    invoke = Invoke(task.fn, args, kwargs, task.timeout_seconds, info.name, task.is_async, task.isgenerator)
    judge = _judge_remote if remote else _judge_local
    if task.retries:

        def condition(state: State[Any]) -> bool:
            fn = task.retry_condition_fn
            return fn is None or bool(fn(task, info, state))

        state = yield from retry_loop(task, info, invoke, judge, condition)
    else:
        state = yield from retry_loop(task, info, invoke, judge)
    if plan is not None and plan.persist and state.is_completed():
        try:
            location = plan.write(state.data)
        except Exception as exc:
            message = f"the result of {info.name!r} could not be persisted: {type(exc).__name__}: {exc}"
            return Failed(exc, message=message, run_count=state.run_count)
        update: dict[str, Any] = {"result_location": location}
        if task.cache_result_in_memory is False:  # keep only where it is: result() reads it back
            update["data"] = plan.reference()
        state = state.model_copy(update=update)
    return state


def _judge_local(outcome: Outcome, run_count: int, started: datetime) -> State[Any]:
    if outcome.ok:
        return Completed(outcome.value, run_count=run_count, start_time=started)
    return failed_state(outcome.value, run_count, start_time=started)


def _judge_remote(outcome: Outcome, run_count: int, started: datetime) -> State[Any]:
    if outcome.ok:
        return Completed(outcome.value, run_count=run_count, start_time=started)
    return failed_state(outcome.value, run_count, remote=True, start_time=started)


def _always(state: State[Any]) -> bool:
    return True


def retry_loop(
    policy: _RetryPolicy,
    info: TaskRunInfo | FlowRunInfo,
    invoke: Invoke,
    judge: Callable[[Outcome, int, datetime], State[Any]],
    condition: Callable[[State[Any]], bool] = _always,
) -> Steps[State[Any]]:
    """Invoke until a run completes or its retries are spent; shared by tasks and flows.

    The final state carries the start of the first attempt (``start_time``)
    and, after retries, the states passed through (``history``).
    """
    # A task run's start was read just before (task_steps): one clock, one time.
    first = getattr(info, "started", None)
    started = datetime.now(UTC) if first is None else datetime.fromtimestamp(first, UTC)
    history: list[State[Any]] = []
    while True:
        info.run_count += 1
        outcome = yield invoke
        assert outcome is not None
        nested = getattr(info, "nested", None)
        if nested is not None:  # the attempt submitted runs: wait for them (taskyard.nested)
            info.nested = None  # type: ignore[union-attr]
            nested.close(outcome.ok)
        state = judge(outcome, info.run_count, started)
        if not state.is_bad() or info.run_count > policy.retries or not _ask(condition, state, info):
            if history:  # rare: only runs that retried pay for the copy
                state = state.model_copy(update={"history": tuple(history)})
            return state
        delay = retry_delay(policy, info.run_count - 1)
        retrying = Retrying(f"retry {info.run_count} of {policy.retries} in {delay:.3g} s after: {state.message}", run_count=info.run_count)
        check_transition(state.type, retrying.type)
        history.append(retrying)
        run_log(info).log(
            _level(info, logging.INFO), "Retrying in %.3g s (attempt %d of %d) after: %s",
            delay, info.run_count + 1, policy.retries + 1, state.message,
        )  # fmt: skip
        if delay > 0:
            yield Sleep(delay)


def run_log(info: TaskRunInfo | FlowRunInfo) -> RunLoggerAdapter:
    """The lifecycle logger of a task run (``taskyard.task_runs``) or flow run (``taskyard.flow_runs``)."""
    if isinstance(info, TaskRunInfo):
        return RunLoggerAdapter(logging.getLogger("taskyard.task_runs"), run_extra(flow_run_var.get(), info))
    return RunLoggerAdapter(logging.getLogger("taskyard.flow_runs"), run_extra(info, None))


def _level(info: TaskRunInfo | FlowRunInfo, level: int) -> int:
    return logging.DEBUG if isinstance(info, TaskRunInfo) and info.map_index >= MAP_LOG_LIMIT else level


def _log_failure(info: TaskRunInfo, state: State[Any]) -> None:
    exc = state.data if isinstance(state.data, BaseException) else None
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None and exc.__traceback__ is not None else None
    retries = f" after {info.run_count} attempts" if info.run_count > 1 else ""
    run_log(info).log(
        _level(info, logging.ERROR), "Finished in state %s%s: %s", state.name, retries, state.message, exc_info=exc_info
    )


def _ask(condition: Callable[[State[Any]], bool], state: State[Any], info: object) -> bool:
    try:
        return condition(state)
    except Exception:
        logger.exception("retry_condition_fn of %r raised; not retrying", getattr(info, "name", info))
        return False


def retry_delay(policy: _RetryPolicy, retry_index: int) -> float:
    """Seconds to wait before retry number ``retry_index`` (0 for the first retry)."""
    spec = policy.retry_delay_seconds
    if isinstance(spec, (int, float)):
        delay = float(spec)
    elif spec:
        delay = float(spec[min(retry_index, len(spec) - 1)])
    else:
        delay = 0.0
    jitter = policy.retry_jitter_factor
    if jitter:
        delay *= 1.0 + random.uniform(-min(jitter, 1.0), jitter)
    return max(0.0, delay)


def failed_state(
    exc: BaseException,
    run_count: int,
    remote: bool = False,
    start_time: datetime | None = None,
    timestamp: datetime | None = None,
) -> State[Any]:
    """The final state for an exception raised by user code.

    In another process than the flow's (``remote``), the traceback is kept
    as text, since it does not survive pickling; ``State.result()`` attaches
    it as the ``__cause__`` of the exception it re-raises.
    """
    if isinstance(exc, TaskTimeoutError):
        return TimedOut(exc, run_count=run_count, start_time=start_time, timestamp=timestamp)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if remote else None
    return Failed(exc, run_count=run_count, traceback=text, start_time=start_time, timestamp=timestamp)


def hook_steps(hooks: Iterable[Callable[..., object]], owner: object, info: object, state: State[Any]) -> Steps[None]:
    """Call each hook as ``hook(owner, info, state)``, as effects of the engine.

    An ``async def`` hook is awaited: on the run's event loop when the engine
    runs on one, else on the portal loop. A hook that raises is logged, not
    fatal: the run's state stays what it was.
    """
    for hook in hooks:
        outcome = yield Invoke(hook, (owner, info, state), {}, run_name=f"hook {hook!r}")
        assert outcome is not None
        if outcome.ok and inspect.isawaitable(outcome.value):  # a sync callable that returned a coroutine
            outcome = yield Invoke(_awaiting, (outcome.value,), {}, is_async=True)
            assert outcome is not None
        if not outcome.ok:
            error = outcome.value
            logger.error(
                "hook %r of %r raised; the run's state is unchanged",
                hook,
                getattr(info, "name", info),
                exc_info=(type(error), error, error.__traceback__),
            )


async def _awaiting(awaitable: Any) -> Any:
    return await awaitable


def run_hooks(hooks: Iterable[Callable[..., object]], owner: object, info: object, state: State[Any]) -> None:
    """Call hooks outside an engine generator (a flow run being torn down); see :func:`hook_steps`."""
    drive(hook_steps(hooks, owner, info, state))
