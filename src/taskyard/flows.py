"""``@flow`` and :class:`Flow`: a function whose task runs go through one task runner.

A call of a flow is a flow run::

    Flow.__call__ ─ bind + validate parameters ─ pick and start a runner
       ▼
    flow_engine.flow_steps (the engine's retry_loop, like a task): the body,
    its retries and hooks; then the runner is shut down (outstanding work
    cancelled if the run did not complete). See flow_engine.py.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, Literal, TypeVar, overload

from typing import TYPE_CHECKING

from typing_extensions import ParamSpec

from taskyard import flowrecord
from taskyard.context import FlowRunInfo, current_tags, flow_run_var, in_sync_run
from taskyard.dispatch import Dispatcher, new_run_id
from taskyard.flow_engine import FlowRunState, abort_run, close_run, finish_run, flow_steps
from taskyard.exceptions import ParameterValidationError, ReservedArgumentError
from taskyard.execution import drive, drive_async
from taskyard.futures import TaskFuture
from taskyard.futures import wait as wait_futures
from taskyard.inputs import find_upstreams, first_blocking_failure, local_lookup, pending_futures, resolve
from taskyard.interrupts import flow_run_signals, shielded
from taskyard.methods import bind_to, unwrap_method
from taskyard.options import HookOption, call_name_fn, check_result_options, check_retries, check_template, check_timeout, format_name
from taskyard.reporting import FlowRunReport
from taskyard.runners.base import TaskRunner
from taskyard.runners.registry import registry, resolve_runner
from taskyard.settings import current_settings
from taskyard.signature import Binder
from taskyard.sources import import_object
from taskyard.states import Failed, State
from taskyard.validation import ParameterValidator, serialize_parameters
from taskyard.visualize import FlowGraph, current_tracer, in_notebook, trace_flow

if TYPE_CHECKING:
    from taskyard.background.deployments import Deployment

__all__ = ("Flow", "flow", "task_runner_override")

P = ParamSpec("P")
R = TypeVar("R")

_override: ContextVar[Any] = ContextVar("taskyard_runner_override", default=None)


@contextlib.contextmanager
def task_runner_override(spec: Any) -> Iterator[None]:
    """Run every flow started inside the block on ``spec`` (name, class or instance).

    This is what ``taskyard run --runner NAME`` and ``taskyard bench`` use to
    run one flow on every runner; it wins over the flow's own choice.
    """
    _check_runner_spec(spec)
    token = _override.set(spec)
    try:
        yield
    finally:
        _override.reset(token)


def _check_runner_spec(spec: Any) -> None:
    if isinstance(spec, str):
        registry.get(spec)  # unknown names fail here, at definition
    elif spec is not None and not isinstance(spec, TaskRunner) and not (
        isinstance(spec, type) and issubclass(spec, TaskRunner)
    ):
        raise TypeError(f"task_runner must be a TaskRunner instance, class or registered name, not {spec!r}")


_FLOW_OPTIONS = (
    "name", "version", "flow_run_name", "task_runner", "description", "timeout_seconds",
    "validate_parameters", "retries", "retry_delay_seconds", "persist_result", "result_storage",
    "result_serializer", "log_prints", "on_completion", "on_failure", "on_cancellation",
    "on_crashed", "on_running", "tag_concurrency",
)  # fmt: skip


class Flow(Generic[P, R]):
    """A function marked with ``@flow``; calling it makes a flow run."""

    retry_jitter_factor: float | None = None
    on_running = HookOption("on_running")
    on_completion = HookOption("on_completion")
    on_failure = HookOption("on_failure")
    on_cancellation = HookOption("on_cancellation")
    on_crashed = HookOption("on_crashed")
    retries: int
    retry_delay_seconds: Any

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        fn, self.binds_class = unwrap_method(fn)
        if not callable(fn):
            raise TypeError(f"@flow needs a function, not {fn!r}")
        unknown = set(options) - set(_FLOW_OPTIONS)
        if unknown:
            raise TypeError(f"unknown flow option(s): {', '.join(sorted(unknown))}; known: {', '.join(_FLOW_OPTIONS)}")
        self.fn = fn
        self.binder = Binder(fn)
        clash = sorted({"return_state", "wait_for"} & self.binder.all_names)
        if clash:
            raise ReservedArgumentError(
                f"flow {getattr(fn, '__qualname__', fn)!r} has a parameter named {clash[0]!r}, which taskyard "
                f"reserves (a flow call takes {clash[0]}=...); rename the parameter"
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.options = dict(options)
        self.name: str = str(options.get("name") or getattr(fn, "__name__", "flow"))
        owner = f"flow {self.name!r}"
        self.version = options.get("version")
        self.description = options.get("description") or inspect.getdoc(fn)
        self.flow_run_name = options.get("flow_run_name")
        check_template(self.flow_run_name, self.binder.all_names, "flow_run_name", owner, not self.binder.simple)
        self.task_runner = options.get("task_runner")
        _check_runner_spec(self.task_runner)
        self.timeout_seconds = check_timeout(options.get("timeout_seconds"), owner)
        self.should_validate_parameters: bool = options.get("validate_parameters", True)
        self.retries = options.get("retries", 0)
        self.retry_delay_seconds = check_retries(self.retries, options.get("retry_delay_seconds", 0), None, owner)
        self.persist_result = options.get("persist_result")
        self.result_storage = options.get("result_storage")
        self.result_serializer = options.get("result_serializer")
        check_result_options(self.result_storage, self.result_serializer, owner)
        self.log_prints = options.get("log_prints")
        for hook in ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running"):
            setattr(self, hook, options.get(hook))
        limits = options.get("tag_concurrency") or {}
        for tag, limit in limits.items():
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"{owner}: tag_concurrency[{tag!r}] must be a whole number ≥ 1, not {limit!r}")
        self.tag_concurrency: dict[str, int] = dict(limits)
        self._validator = ParameterValidator(fn, self.name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"

    def __get__(self, instance: Any, owner: Any = None) -> Flow[P, R]:
        """A flow on a method binds ``self`` (or ``cls``) like the function it wraps."""
        bound = bind_to(self.fn, instance, owner, self.binds_class)
        if bound is None:
            return self
        copied = object.__new__(type(self))  # not copy.copy: a Task pickles (and copies) by name
        copied.__dict__.update(self.__dict__)
        copied.fn, copied.binder, copied.binds_class = bound, Binder(bound), False
        copied._validator = ParameterValidator(bound, self.name)
        return copied

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of the flow with the given options changed."""
        return Flow(self.fn, **{**self.options, **changes})

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Check parameters against the flow function's type hints and coerce them, as a run does.

        Args:
            parameters: Values by parameter name.

        Returns:
            A new dict with each value coerced to its hint (``"3"`` → ``3``
            for an ``int``); defaults are not filled in.

        Raises:
            TypeError: A required parameter is missing or one is unknown.
            ParameterValidationError: A value does not fit its hint.
        """
        params = self.binder.bind((), dict(parameters)) if self.binder.simple else dict(parameters)
        return self._validator(params)

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters as JSON-safe values, as a run records them.

        A value JSON cannot hold (a client, an open file) becomes the string
        ``"<TypeName>"``, so the rest is still kept; so do futures and States.
        """
        plain = {k: v for k, v in parameters.items() if not isinstance(v, (TaskFuture, State))}
        out = serialize_parameters(plain)
        return {k: out[k] if k in out else f"<{type(v).__name__}>" for k, v in parameters.items()}

    def visualize(self, *args: Any, **kwargs: Any) -> FlowGraph:
        """Draw the flow's task graph without running its tasks.

        The flow function runs with every task call, submit and map recorded
        instead of run (each returns a placeholder, or the task's
        ``viz_return_value``); subflows are drawn as clusters. Outside a
        notebook the image is written to ``<flow name>.png`` in the current
        directory; in a notebook the returned graph shows inline.

        Returns:
            The graph: ``.source`` (dot text), ``.render(path)`` (PNG or SVG).

        Raises:
            VisualizationError: The flow needed a real value from a task
                (set ``viz_return_value``), or Graphviz is not installed
                (``pip install -e '.[viz]'`` in the repository, and the ``dot`` program).
        """
        graph = trace_flow(self, args, kwargs)
        if not in_notebook():
            graph.render(f"{self.name}.png")
        return graph

    def to_deployment(
        self,
        name: str | None = None,
        *,
        interval: Any = None,
        cron: Any = None,
        parameters: dict[str, Any] | None = None,
        paused: bool | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
    ) -> Deployment:
        """A deployment of this flow, for ``taskyard.serve(*deployments)`` (see docs/background.md).

        Args:
            name: The deployment's name (default: the flow's); its runs are
                recorded as ``"<flow name>/<name>"``.
            interval: Start a run every so many seconds (a number, a timedelta, or a list of them).
            cron: Start a run at the times of a cron expression (or a list of them).
            parameters: Default parameters of its runs.
            paused: Its schedules start nothing (runs started by name still run).
            tags: Tags of its runs.
            description: A description kept with it.

        Raises:
            ValueError: A bad name or schedule, both ``interval`` and ``cron``,
                or (with a schedule) parameters that do not make a valid call.
            ImportError: ``cron`` without cronsim installed.
        """
        from taskyard.background.deployments import make_deployment

        return make_deployment(
            self, name, interval=interval, cron=cron, parameters=parameters, paused=paused, tags=tags, description=description
        )

    def serve(
        self,
        name: str | None = None,
        *,
        interval: Any = None,
        cron: Any = None,
        parameters: dict[str, Any] | None = None,
        paused: bool | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
        limit: int | None = None,
    ) -> None:
        """Serve this flow in this process until Ctrl-C or SIGTERM: runs on schedule, and runs started by name.

        The same as ``taskyard.serve(self.to_deployment(name, ...), limit=limit)``;
        ``limit`` caps the runs in flight at once. See :meth:`to_deployment`.
        """
        from taskyard.background import serve

        deployment = self.to_deployment(
            name, interval=interval, cron=cron, parameters=parameters, paused=paused, tags=tags, description=description
        )
        serve(deployment, limit=limit)

    @classmethod
    def from_source(cls, source: str | os.PathLike[str], entrypoint: str) -> Flow[..., Any]:
        """Load a flow from a local directory.

        Args:
            source: A directory on this machine (remote repositories and
                storage blocks are not supported).
            entrypoint: ``"path/to/file.py:flow_function"`` relative to
                ``source``, or ``"package.module:flow_function"`` importable
                from it.

        Raises:
            ValueError: ``source`` is not a local directory, or ``entrypoint``
                is not of the form ``FILE.py:NAME`` / ``MODULE:NAME``.
            LookupError: The file, module or name does not exist.
            TypeError: The object named is not a flow.
        """
        return load_from_source(source, entrypoint)

    # See Task.__call__ for why the return_state overloads carry an ignore.
    @overload
    def __call__(self, *args: P.args, return_state: Literal[True], **kwargs: P.kwargs) -> State[R]: ...  # type: ignore[valid-type]
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow and return its result (``return_state=True``: its final State).

        An async flow returns a coroutine to await.

        Raises:
            ParameterValidationError: A parameter does not fit its type hint
                (before anything runs; with ``return_state=True`` a Failed
                State holding it is returned instead).
            Exception: The flow's own exception, or that of a failed task
                run it returned, unless ``return_state`` is True.
        """
        tracer = current_tracer()
        if tracer is not None:  # a subflow of a flow being visualized
            kwargs.pop("return_state", None)
            return tracer.subflow(self, args, kwargs)
        return_state = bool(kwargs.pop("return_state", False))
        wait_for = kwargs.pop("wait_for", None)
        if self.is_async:
            if in_sync_run():  # an async subflow of a sync flow or task: run it to its end
                import asyncio

                return asyncio.run(self._run_async(args, kwargs, return_state, wait_for))
            return self._run_async(args, kwargs, return_state, wait_for)
        with flow_run_signals(self.name):
            run = self._prepare(args, kwargs, wait_for)
            if isinstance(run, State):  # it never started
                return run if return_state else run.result()
            state = finish_run(run, lambda: drive(flow_steps(run)))
        return state if return_state else state.result()

    async def _run_async(self, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, wait_for: Any) -> Any:
        with flow_run_signals(self.name):
            run = self._prepare(args, kwargs, wait_for)
            if isinstance(run, State):
                return run if return_state else run.result()
            steps = flow_steps(run)
            try:
                state = await drive_async(steps)
            except BaseException as exc:
                with shielded():
                    abort_run(run, exc)
                raise
            close_run(run, state)
        return state if return_state else state.result()

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any = None) -> FlowRunState | State[Any]:
        """The run about to start, or the State of a run that never starts.

        It never starts when an upstream in ``wait_for`` ended badly (NotReady)
        or a parameter is invalid (Failed, holding the ParameterValidationError).
        """
        params = self.binder.bind(args, kwargs)
        if wait_for is not None:  # a subflow waits for these runs, and does not run if one failed
            after = find_upstreams(wait_for)
            wait_futures(pending_futures(after))
            blocked = first_blocking_failure(after, local_lookup)
            if blocked is not None:
                return blocked
        ups = find_upstreams(params)
        if ups:  # a subflow given futures gets their results
            wait_futures(pending_futures(ups))
            params = resolve(params)
        if self.should_validate_parameters:
            try:
                params = self._validator(params)
            except ParameterValidationError as exc:
                return Failed(exc, message=f"the flow run did not start: {exc}", run_count=0)
        preset = flowrecord.take_preset()
        run_id = preset[0] if preset else new_run_id()
        if preset and preset[1]:
            name = preset[1]
        elif self.flow_run_name is None:
            name = f"{self.name}-{run_id[:8]}"
        elif callable(self.flow_run_name):
            name = call_name_fn(self.flow_run_name, "flow_run_name")
        else:
            name = format_name(self.flow_run_name, self.binder.with_defaults(params))
        settings = current_settings()
        outermost = flow_run_var.get() is None
        info = FlowRunInfo(
            run_id,
            name,
            self.name,
            current_tags(),
            params,
            home=str(settings.home),
            persist_results=self.persist_result if self.persist_result is not None else settings.persist_results,
            log_prints=_log_prints(self.log_prints),
            pid=os.getpid(),
            result_storage=self.result_storage,
            result_serializer=self.result_serializer,
        )
        report = FlowRunReport(info, settings, outermost)  # sets up the console handler
        info.log_level = min(logging.getLogger().getEffectiveLevel(), logging.getLogger("taskyard").getEffectiveLevel())
        runner = self._runner_for_run(settings.task_runner)
        try:
            runner.start()
        except BaseException:  # Ctrl-C while a cluster starts: release what did start
            with shielded():
                runner.shutdown(wait=False, cancel_pending=True)
            raise
        report.begin(self.name, runner)
        dispatcher = Dispatcher(runner, info, self.tag_concurrency)
        dispatcher.counter = report.counter
        run = FlowRunState(self, info, dispatcher, report)
        flowrecord.begin(self, info, dispatcher, settings)
        return run

    def _runner_for_run(self, default: str | None) -> TaskRunner[Any]:
        spec = _override.get() or self.task_runner or default or "threads"
        runner = resolve_runner(spec)
        return runner.duplicate() if runner is spec else runner


def _log_prints(option: bool | None) -> bool:
    """A flow's log_prints: its own, else that of the flow run it is a subflow of."""
    if option is not None:
        return bool(option)
    parent = flow_run_var.get()
    return bool(parent and parent.log_prints)


def load_from_source(source: str | os.PathLike[str], entrypoint: str) -> Flow[..., Any]:
    """The flow ``entrypoint`` names under the local directory ``source`` (see :meth:`Flow.from_source`)."""
    text = os.fspath(source)
    if "://" in text or text.startswith("git@"):
        raise ValueError(
            f"Flow.from_source: {text!r} is not a local directory; taskyard loads flows from this machine "
            "only (clone or download the code first, then pass its directory)"
        )
    if not os.path.isdir(text):
        raise ValueError(f"Flow.from_source: {text!r} is not a directory")
    obj = import_object(entrypoint, base=text)
    if not isinstance(obj, Flow):
        raise TypeError(f"Flow.from_source: {entrypoint!r} is {type(obj).__name__}, not a @flow")
    return obj


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...
@overload
def flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function as a flow, bare (``@flow``) or with options (``@flow(task_runner="processes")``).

    Options: ``name, version, flow_run_name, task_runner, description,
    timeout_seconds, validate_parameters, retries, retry_delay_seconds,
    persist_result, result_storage, result_serializer, log_prints,
    on_completion, on_failure, on_cancellation, on_crashed, on_running,
    tag_concurrency`` — see docs/flows.md.

    Raises:
        RunnerNotFound: ``task_runner`` names no registered runner.
        ValueError, TypeError: An option has a value it cannot take.
    """
    if fn is not None:
        return Flow(fn, **options)
    return lambda f: Flow(f, **options)
