"""``@task`` and :class:`Task`: a function with run policies, called, submitted or mapped."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from typing_extensions import ParamSpec

from taskyard.caching import task_input_hash
from taskyard.context import TaskRunInfo, current_tags, flow_state_var, in_sync_run, task_run_var
from taskyard.engine import TaskCall
from taskyard.exceptions import (
    NoActiveFlowError,
    ReservedArgumentError,
)
from taskyard.execution import drive, drive_async
from taskyard.futures import FutureList, TaskFuture
from taskyard.mapping import map_columns
from taskyard.methods import bind_to, unwrap_method
from taskyard.inputs import Upstream, find_upstreams, pending_futures, resolve, scan
from taskyard.options import TaskOptions, call_name_fn, format_name, hooks_list
from taskyard.retries import exponential_backoff
from taskyard.signature import Binder
from taskyard.states import State
from taskyard.transactions import open_transaction
from taskyard.visualize import current_tracer

if TYPE_CHECKING:
    from taskyard.deferred import DeferredFuture
    from taskyard.dispatch import Dispatcher

__all__ = ("Task", "task", "exponential_backoff", "task_input_hash")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

RESERVED = frozenset({"wait_for", "return_state"})


class Task(TaskOptions, Generic[P, R]):
    """A function marked with ``@task``.

    Call it to run it here and get its result; ``submit`` it or ``map`` it
    inside a flow to hand runs to the flow's task runner. Options (retries,
    timeout, caching, hooks ...) are attributes; ``with_options`` makes a
    changed copy. See the options on :func:`task`.
    """

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        fn, self.binds_class = unwrap_method(fn)
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {fn!r}")
        self.fn = fn
        self.binder = Binder(fn)
        clash = RESERVED & self.binder.all_names
        if clash:
            name = sorted(clash)[0]
            raise ReservedArgumentError(
                f"task {getattr(fn, '__qualname__', fn)!r} has a parameter named {name!r}, which taskyard "
                f"reserves (submit/map take {name}=...); rename the parameter"
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.isgenerator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        options.setdefault("name", getattr(fn, "__name__", type(fn).__name__))
        options.setdefault("description", inspect.getdoc(fn))
        self.set_options(options)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __get__(self, instance: Any, owner: Any = None) -> Task[P, R]:
        """A task on a method binds ``self`` (or ``cls``) like the function it wraps."""
        bound = bind_to(self.fn, instance, owner, self.binds_class)
        if bound is None:
            return self
        copied = object.__new__(type(self))  # not copy.copy: a Task pickles (and copies) by name
        copied.__dict__.update(self.__dict__)
        copied.__dict__.pop("_export_name", None)
        copied.fn, copied.binder, copied.binds_class = bound, Binder(bound), False
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A task that its module exports under its function's name pickles as
        # that name: a call shipped to a worker then carries a few bytes
        # instead of the task's options, signature and function.
        where = _importable_name(self)
        if where is not None:
            return _task_by_name, where
        return super().__reduce_ex__(protocol)

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of the task with the given options changed."""
        return Task(self.fn, **{**self.options, **changes})

    def on_commit(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """Add a commit hook, as a decorator: ``@my_task.on_commit``; see :func:`taskyard.transactions.transaction`."""
        self.options["on_commit"] = (*self.on_commit_hooks, fn)
        self.on_commit_hooks = hooks_list(self.options["on_commit"], "on_commit")
        return fn

    def on_rollback(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """Add a rollback hook, as a decorator: ``@my_task.on_rollback``; see :func:`taskyard.transactions.transaction`."""
        self.options["on_rollback"] = (*self.on_rollback_hooks, fn)
        self.on_rollback_hooks = hooks_list(self.options["on_rollback"], "on_rollback")
        return fn

    # -- the parameters of one call ----------------------------------------------

    def split_parameters(self, params: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The ``(args, kwargs)`` to call the function with."""
        split: tuple[tuple[Any, ...], dict[str, Any]] = self.binder.split(params)
        return split

    def run_name(self, params: dict[str, Any], run_id: str) -> str:
        """The name of a run: ``task_run_name`` applied to its parameters, or ``<name>-<short id>``."""
        template = self.task_run_name
        if template is None:
            return f"{self.name}-{run_id[:8]}"
        if callable(template):
            return call_name_fn(template, "task_run_name")
        return format_name(template, self.binder.with_defaults(params))

    # -- the three ways to run it --------------------------------------------------

    # Keyword arguments after ``P.args`` are what callers need and type-check
    # at the call site; mypy flags the declaration itself (valid-type).
    @overload
    def __call__(self, *args: P.args, return_state: Literal[True], **kwargs: P.kwargs) -> State[R]: ...  # type: ignore[valid-type]
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here (in the flow's thread) and return its result.

        A generator task returns a generator that yields the values as the
        run produces them (see docs/tasks.md). With ``return_state=True``,
        return its final State instead of raising on failure; ``wait_for=[futures]`` waits for those runs first. An async
        task returns an awaitable where an event loop runs (an async flow, or
        outside any run); inside a sync flow or task it runs to its end.
        """
        tracer = current_tracer()
        if tracer is not None:  # Flow.visualize(): record the call, run nothing
            return tracer.call(self, args, kwargs, "call")
        return_state = bool(kwargs.pop("return_state", False))
        call, ups = self._call_here(args, kwargs, kwargs.pop("wait_for", None))
        if self.isgenerator and not return_state:
            from taskyard.task_engine import stream_call_async, stream_call_sync

            if inspect.isasyncgenfunction(self.fn) and not in_sync_run():
                return stream_call_async(call, ups)
            return stream_call_sync(call, ups)
        if self.is_async and not in_sync_run():
            return self._run_async(call, ups, return_state)
        for future in pending_futures(ups):
            future.wait()
        submitted = time.time()
        return _unwrap(_noted(call, drive(_steps(call)), submitted), return_state)

    async def _run_async(self, call: TaskCall[R], ups: list[Upstream], return_state: bool) -> Any:
        for upstream in ups:
            if isinstance(upstream.future, TaskFuture) and not upstream.future.done():
                await _done(upstream.future)
        submitted = time.time()
        return _unwrap(_noted(call, await drive_async(_steps(call)), submitted), return_state)

    def _call_here(self, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any) -> tuple[TaskCall[R], list[Upstream]]:
        params = self.binder.bind(args, kwargs)
        ups: list[Upstream] = []
        if scan(params, ups) and not ups:  # only quote/allow_failure wrappers: unwrap them now
            params = resolve(params)
        if wait_for is not None:
            find_upstreams(wait_for, ups)
        dispatcher = _dispatcher_or_none()
        if dispatcher is not None:
            info = dispatcher.task_run(self, params)
            flow_run = dispatcher.flow_run
        else:
            from taskyard.dispatch import new_run_id

            run_id = new_run_id()
            info = TaskRunInfo(run_id, self.run_name(params, run_id), self.name, current_tags() | self.tags)
            txn = open_transaction()
            info.transaction = txn.id if txn is not None else None
            flow_run = None
        return TaskCall(self, params, info, flow_run, ups), ups

    @overload
    def submit(self, *args: P.args, return_state: Literal[True], **kwargs: P.kwargs) -> State[R]: ...  # type: ignore[valid-type, overload-overlap]
    @overload
    def submit(
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> TaskFuture[T]: ...
    @overload
    def submit(self, *args: P.args, wait_for: Any, **kwargs: P.kwargs) -> TaskFuture[R]: ...  # type: ignore[valid-type]
    @overload
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]: ...

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Hand one run to the flow's task runner and return its future at once.

        ``wait_for=[futures]`` makes the run wait for other runs it takes no
        data from. ``return_state=True`` waits for the run and returns its
        final State instead of a future (as in Prefect).

        Raises:
            NoActiveFlowError: Called outside a flow.
        """
        tracer = current_tracer()
        if tracer is not None:
            return tracer.call(self, args, kwargs, "submit")
        wait_for = kwargs.pop("wait_for", None)
        return_state = bool(kwargs.pop("return_state", False))
        dispatcher = _dispatcher(self, "submit")
        future = dispatcher.submit(self, self.binder.bind(args, kwargs), wait_for)
        if return_state:
            future.wait()
            return future.state
        return future

    @overload
    def map(self: Task[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> FutureList[T]: ...
    @overload
    def map(self, *args: Any, **kwargs: Any) -> FutureList[R]: ...

    def map(self, *args: Any, **kwargs: Any) -> Any:
        """Submit one run per element of the iterable arguments.

        Iterables must have equal lengths; other values, ``str`` and
        ``bytes``, and ``unmapped(...)`` values go whole to every run. A
        future given as an argument is waited for and its result mapped over;
        a list of futures maps one future to each run (no waiting).
        ``return_state=True`` waits for the runs and returns their final
        States in order (as in Prefect). ``deferred=True`` enqueues the runs
        for task workers instead (see :meth:`apply_async`), inside a flow or
        not.

        Raises:
            NoActiveFlowError: Called outside a flow (without ``deferred=True``).
            MappingLengthMismatch: The iterables have different lengths.
            MappingMissingIterable: No argument is iterable.
        """
        tracer = current_tracer()
        if tracer is not None:
            if kwargs.get("deferred"):
                _no_tracer(self, "map(deferred=True)")
            return tracer.call(self, args, kwargs, "map")
        wait_for = kwargs.pop("wait_for", None)
        return_state = bool(kwargs.pop("return_state", False))
        deferred = bool(kwargs.pop("deferred", False))
        dispatcher = None if deferred else _dispatcher(self, "map")
        static, mapped, length = map_columns(self.name, self.binder, self.binder.bind(args, kwargs))
        if dispatcher is None:
            futures = self._map_deferred(static, mapped, length, wait_for)
        else:
            futures = dispatcher.map(self, static, mapped, length, wait_for)
        if return_state:
            futures.wait()
            return [future.state for future in futures]
        return futures

    def _map_deferred(self, static: dict[str, Any], mapped: dict[str, Sequence[Any]], length: int, wait_for: Any) -> Any:
        from taskyard.deferred import enqueue_runs

        param_sets = [({**static, **{name: column[i] for name, column in mapped.items()}}, i) for i in range(length)]
        return FutureList(enqueue_runs(self, param_sets, wait_for))

    # -- deferred runs, for task workers ---------------------------------------------

    def apply_async(
        self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None, wait_for: Any = None
    ) -> DeferredFuture[R]:
        """Enqueue a run for a task worker and return its future at once.

        Works inside a flow and in plain code (a web handler). The run is
        recorded Pending in the run store of TASKYARD_HOME; a worker serving
        this task (:meth:`serve`, ``taskyard.serve_tasks``, ``taskyard worker``)
        claims and runs it. The future follows it through the store, from
        any process (see docs/background.md).

        Args:
            args: Positional arguments for the task.
            kwargs: Keyword arguments for the task.
            wait_for: Futures the run must wait for; deferred ones hold it in
                the queue until they are final (it ends NotReady if one failed).

        Raises:
            TypeError: The arguments do not fit the task's signature.
            UnpicklableArgumentError: An argument cannot be pickled (it is named).
        """
        from taskyard.deferred import enqueue_runs

        _no_tracer(self, "apply_async")
        params = self.binder.bind(tuple(args or ()), dict(kwargs or {}))
        (future,) = enqueue_runs(self, [(params, -1)], wait_for)
        return future

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> DeferredFuture[R]:
        """Enqueue a run for a task worker: ``apply_async`` with the task's own calling convention."""
        return self.apply_async(args=args, kwargs=kwargs)

    def serve(self, *, limit: int | None = 10, task_runner: Any = None) -> None:
        """Run a task worker for this task in this process until Ctrl-C or SIGTERM.

        The same as ``taskyard.serve_tasks(self, limit=..., task_runner=...)``.
        """
        from taskyard.background import serve_tasks

        serve_tasks(self, limit=limit, task_runner=task_runner)



def _no_tracer(t: Task[..., Any], method: str) -> None:
    """Deferred runs are real work in the store: ``Flow.visualize()`` cannot draw them (as in Prefect)."""
    if current_tracer() is not None:
        from taskyard.visualize import VisualizationError

        raise VisualizationError(f"{t.name}.{method} enqueues a run for a task worker, which visualize() cannot draw")


def _importable_name(t: Task[..., Any]) -> tuple[str, str] | None:
    """``(module, qualname)`` if importing that gives back this very task, else None."""
    module_name = getattr(t.fn, "__module__", None)
    qualname = getattr(t.fn, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<locals>" in qualname:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        return None
    import cloudpickle

    if module_name in cloudpickle.list_registry_pickle_by_value():
        return None  # the module is not importable where the task goes
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is t:
        return module_name, qualname
    # `fast = task(slow_impl)` style: the task lives under another name.
    cached = t.__dict__.get("_export_name")
    if cached is None or getattr(module, cached, None) is not t:
        cached = next((name for name, value in vars(module).items() if value is t), None)
        t.__dict__["_export_name"] = cached
    return (module_name, cached) if cached is not None else None


def _task_by_name(module_name: str, qualname: str) -> Task[..., Any]:
    import importlib

    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _steps(call: TaskCall[R]) -> Any:
    from taskyard.engine import task_steps

    return task_steps(call)


def _noted(call: TaskCall[R], state: State[R], submitted: float) -> State[R]:
    """Tell the open transaction block, if any, that a run started in it ended; record it with its flow run."""
    txn = open_transaction()
    if txn is not None:
        txn.note_run(call.task, call.task_run, state)
    dispatcher = _dispatcher_or_none()
    if dispatcher is None or dispatcher.recorder is None or task_run_var.get() is not None:
        return state  # not recorded, or called inside a task run (as on every runner: not seen by the flow)
    if call.flow_run is dispatcher.flow_run:
        dispatcher.recorder.track_done(call.flow_run.id, call.task_run, state, submitted)  # type: ignore[union-attr]
    return state


def _unwrap(state: State[R], return_state: bool) -> Any:
    return state if return_state else state.result()


async def _done(future: TaskFuture[Any]) -> None:
    try:
        await future
    except BaseException:  # only waiting; the engine reads the state
        pass


def _dispatcher_or_none() -> Dispatcher | None:
    run = flow_state_var.get()
    if run is None:
        return None
    dispatcher: Dispatcher = run.dispatcher
    return dispatcher


def _dispatcher(task: Task[..., Any], method: str) -> Dispatcher:
    # Inside a task run, submissions go to a thread pool local to that run,
    # wherever it runs — even where the flow's dispatcher is visible (the
    # sequential runner runs tasks in the flow's thread): every runner must
    # behave the same. See taskyard.nested.
    run = task_run_var.get()
    if run is not None:
        from taskyard.nested import nested_dispatcher

        return nested_dispatcher(run)
    dispatcher = _dispatcher_or_none()
    if dispatcher is None:
        raise NoActiveFlowError(
            f"{task.name}.{method}() needs a running flow: call it inside a @flow function, "
            f"or call the task directly ({task.name}(...)) to run it here and now"
        )
    return dispatcher


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = ...,
    description: str | None = ...,
    tags: Iterable[str] | None = ...,
    version: str | None = ...,
    task_run_name: str | Callable[[], str] | None = ...,
    retries: int = ...,
    retry_delay_seconds: float | Sequence[float] | Callable[[int], Sequence[float]] = ...,
    retry_jitter_factor: float | None = ...,
    retry_condition_fn: Callable[..., bool] | None = ...,
    timeout_seconds: float | None = ...,
    cache_key_fn: Callable[..., str | None] | None = ...,
    cache_policy: Any = ...,
    cache_expiration: Any = ...,
    refresh_cache: bool | None = ...,
    persist_result: bool | None = ...,
    result_storage: Any = ...,
    result_serializer: Any = ...,
    result_storage_key: str | None = ...,
    log_prints: bool | None = ...,
    cache_result_in_memory: bool = ...,
    on_completion: Any = ...,
    on_failure: Any = ...,
    on_commit: Any = ...,
    on_rollback: Any = ...,
    viz_return_value: Any = ...,
    max_concurrency: int | None = ...,
    resources: Mapping[str, float | str] | None = ...,
    batch_size: int | None = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function as a task, bare (``@task``) or with options (``@task(retries=2)``).

    Options: ``name, description, tags, version, task_run_name, retries,
    retry_delay_seconds, retry_jitter_factor, retry_condition_fn,
    timeout_seconds, cache_key_fn, cache_policy, cache_expiration,
    refresh_cache, persist_result, result_storage, result_serializer,
    result_storage_key, log_prints, cache_result_in_memory, on_completion, on_failure,
    on_commit, on_rollback, viz_return_value, max_concurrency, resources, batch_size`` — see
    docs/tasks.md (and docs/resources.md for ``resources={"gpu": 1, "memory": "4 GiB"}``,
    docs/batching.md for ``batch_size``,
    docs/transactions.md for ``on_commit`` / ``on_rollback``).

    Raises:
        ReservedArgumentError: The function has a parameter named ``wait_for``.
        ValueError, TypeError: An option has a value it cannot take.
    """
    if fn is not None:
        return Task(fn, **options)
    return lambda f: Task(f, **options)

