"""The TaskRunner contract: what a runner implements, and nothing else.

A runner decides *where and when* a prepared :class:`~taskyard.engine.TaskCall`
runs and hands back its final :class:`~taskyard.states.State` by completing a
:class:`~taskyard.futures.TaskFuture`. It never sees a user exception: the
engine inside the call turns every outcome into a State, and the runner only
adds states of its own for infrastructure failures (``Crashed``) and
cancellation (``Cancelled``).

To write a runner, subclass :class:`TaskRunner`, implement ``submit`` and
``shutdown`` (and ``setup``/``map`` if the backend wants them), register it
under the entry-point group ``taskyard.runners``, and subclass
``taskyard.testing.TaskRunnerContract`` in your tests.

Everything a runner needs is importable from this module:

* the types it handles — :class:`TaskCall`, :class:`TaskFuture`, :class:`State`;
* the states it may add — :func:`Crashed` (the infrastructure lost the run),
  :func:`Failed` (the run cannot be shipped or its outcome cannot come back),
  :func:`Cancelled`;
* :func:`set_state` — completes a future (once); reserved for runners, like
  ``set_result`` on a CPython future. A runner that installs states another
  way (fetched lazily from a cluster) passes each through
  :func:`received_state` first, so log records the run made elsewhere reach
  the flow process;
* :func:`run_call`, :func:`unpicklable_argument_error`,
  :func:`unreadable_outcome_state`, :func:`count_lost_attempts` and
  :func:`unsatisfiable_resources`;
* :func:`hurrying` — True once a second Ctrl-C or SIGTERM asked a flow
  run's clean-up to hurry: ``shutdown`` then skips its long waits (it still
  completes every future it returned);
* :class:`LayeredOptions` — per-submission options set by nested ``with``
  blocks (what ``dask_options`` and ``ray_options`` are made of; see
  :mod:`taskyard.runners.layered`);
* :func:`without_main` and :func:`launching_without_main` — worker
  processes that start without the flow script's ``__main__``, so a script
  with no ``if __name__ == "__main__":`` guard runs once (see
  :mod:`taskyard.runners.mainless`).

Runners on a cluster backend find the parts Dask and Ray share — upstreams
passed as native futures, shared values shipped once, lost workers turned
into Crashed with retries, cancel-on-exit — in :mod:`taskyard.runners.toolkit`.

Batching (for runners that ship calls): a map of many short calls runs much
faster when its ready calls travel as few backend tasks. A runner that opts
in takes ``batch_size=None`` in its constructor (checked with
:func:`check_batch_size`), keeps one :class:`BatchSizer` per task (the
task's ``call.task.batch_size`` wins over the runner's), cuts each next
batch to ``sizer.size(remaining, workers)`` calls, runs it on the worker
with :func:`run_batch` (each call through the engine on its own; one State
per call in a :class:`BatchResult`) and reports ``sizer.record(n, seconds)``
when a batch ends. The toolkit's :class:`~taskyard.runners.toolkit.BatchFeeder`
does the flow-process side for cluster backends; docs/runners.md shows it
and the conformance suite's ``TaskRunnerBatchingContract`` holds a batching
runner to the per-call semantics.

Resource requests (``@task(resources=...)``, read as ``call.task.resources``)
are kept one of two ways, chosen by ``resource_capacity()``: a runner that
returns its totals (the default, and the built-in runners) has the
dispatcher hold runs back until their requests fit; a runner whose backend
places requests itself (Dask, Ray) returns None, translates the request in
``submit`` and ends a request nothing can ever meet with the state
``unsatisfiable_resources`` gives (see docs/resources.md).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from taskyard.batching import BatchResult, BatchSizer, check_batch_size, run_batch
from taskyard.engine import TaskCall
from taskyard.exceptions import (
    CrashedRunError,
    RunError,
    RunnerNotStartedError,
    RunnerShutdownError,
    UnpicklableArgumentError,
    UnsatisfiableResourcesError,
)
from taskyard.futures import TaskFuture, received_state
from taskyard.interrupts import hurrying
from taskyard.resources import local_capacity, shortfall
from taskyard.runners.group_signals import GROUP_SIGNALS, block_group_signals, deaf_start, ignore_group_signals
from taskyard.runners.layered import LayeredOptions
from taskyard.runners.mainless import launching_without_main, without_main
from taskyard.states import Cancelled, Crashed, Failed, Pending, State

if TYPE_CHECKING:
    from taskyard.lanes import Lane

__all__ = (
    "TaskRunner",
    "TaskCall",
    "TaskFuture",
    "State",
    "Crashed",
    "Cancelled",
    "Failed",
    "Pending",
    "CrashedRunError",
    "set_state",
    "run_call",
    "received_state",
    "unpicklable_argument_error",
    "unsatisfiable_resources",
    "local_capacity",
    "sendable_state",
    "unreadable_outcome_state",
    "count_lost_attempts",
    "launching_without_main",
    "without_main",
    "hurrying",
    "BatchSizer",
    "BatchResult",
    "run_batch",
    "check_batch_size",
    "LayeredOptions",
    "GROUP_SIGNALS",
    "deaf_start",
    "block_group_signals",
    "ignore_group_signals",
)

F = TypeVar("F", bound=TaskFuture[Any])
Self = TypeVar("Self", bound="TaskRunner[Any]")

_NEW, _STARTED, _SHUT = "new", "started", "shut down"


class TaskRunner(abc.ABC, Generic[F]):
    """Places task calls on a backend and completes their futures.

    Lifecycle: ``start()`` (or ``with runner:``) starts what the runner needs;
    ``submit``/``map`` hand it calls; ``shutdown`` waits for or cancels what
    is outstanding and releases everything the runner started — and nothing
    it did not start. A runner is started once; ``duplicate()`` makes a fresh
    one with the same settings (each flow run and subflow gets its own).

    Capabilities (class attributes, read by the dispatcher and the
    conformance suite):

    * ``name``: the registry name (``"threads"``).
    * ``requires_pickling``: calls cross a process boundary.
    * ``resolves_dependencies``: ``submit`` accepts calls whose ``upstreams``
      are not done yet and makes the backend wait for them (passing their
      states to ``TaskCall.run``); otherwise the dispatcher submits a call
      only once its upstreams are done, with plain values in its parameters.
    * ``supports_cancel_running``: ``shutdown(cancel_pending=True)`` can
      interrupt runs already executing, not only those still queued.
    * ``concurrent``: ``submit`` returns before the run finishes (False for a
      runner that runs each call at submission, which leaves nothing to cancel).
    * ``supports_lanes``: ``map_lane`` runs a map whose calls all take the
      engine's fast path by column (see :mod:`taskyard.lanes`).
    """

    name: ClassVar[str] = ""
    requires_pickling: ClassVar[bool] = False
    resolves_dependencies: ClassVar[bool] = False
    supports_cancel_running: ClassVar[bool] = False
    concurrent: ClassVar[bool] = True
    supports_lanes: ClassVar[bool] = False

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]
    _status: str

    def __new__(cls, *args: Any, **kwargs: Any) -> TaskRunner[F]:
        self = super().__new__(cls)
        # Remembered so duplicate() and __eq__ work for every subclass.
        self._init_args = (args, kwargs)
        self._status = _NEW
        return self

    def __repr__(self) -> str:
        args, kwargs = self._init_args
        shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskRunner) and type(other) is type(self) and other._init_args == self._init_args

    def __hash__(self) -> int:
        return id(self)

    # -- lifecycle ------------------------------------------------------------

    def start(self: Self) -> Self:
        """Start the runner (idempotent) and return it.

        Raises:
            RunnerShutdownError: The runner was shut down; use ``duplicate()``.
        """
        if self._status == _NEW:
            self.setup()
            self._status = _STARTED
        elif self._status == _SHUT:
            raise RunnerShutdownError(f"{self!r} was shut down and cannot start again; use runner.duplicate()")
        return self

    def setup(self) -> None:
        """Start the backend: pools, clusters, clients. Called once by ``start``."""

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return self._status == _STARTED

    def check_open(self) -> None:
        """Raise unless the runner accepts work; implementations call it in ``submit``."""
        if self._status != _STARTED:
            if self._status == _NEW:
                raise RunnerNotStartedError(f"{self!r} is not started: use `with runner:` or runner.start() first")
            raise RunnerShutdownError(f"{self!r} is shut down and accepts no more work")

    def begin_shutdown(self) -> bool:
        """Mark the runner shut down; False if it already was (shutdown is idempotent)."""
        if self._status == _SHUT:
            return False
        self._status = _SHUT
        return True

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown(wait=exc is None, cancel_pending=exc is not None)

    def duplicate(self: Self) -> Self:
        """A new, unstarted runner with the same settings."""
        args, kwargs = self._init_args
        return type(self)(*args, **kwargs)

    def resource_capacity(self) -> Mapping[str, float] | None:
        """The resources this runner has, within which the dispatcher keeps requests.

        A mapping (resource name → total; memory in bytes): the dispatcher
        holds runs back until the requests (``task.resources``) of the runs
        in flight fit within these totals, and fails at once a run asking
        for more than a total (a resource not listed: there is none).
        None: the backend places requests itself (see the module docstring).

        Default: this machine (``cpu``: its CPU count, ``memory``: its
        physical memory). Local runners return their ``resources=`` argument
        over these, with ``cpu`` their worker count.
        """
        import os

        return local_capacity(None, os.cpu_count() or 1)

    def with_resources(self: Self, resources: Mapping[str, Any]) -> Self:
        """A new, unstarted runner with the same settings, declaring these resources.

        The default passes ``resources=`` to the constructor with the other
        arguments unchanged, as the built-in runners take it. The
        conformance suite gets its runner with resources through this.

        Raises:
            TypeError: The constructor takes no ``resources`` argument (a
                runner that declares resources another way overrides this).
        """
        import inspect

        if "resources" not in inspect.signature(type(self)).parameters:
            raise TypeError(f"{type(self).__name__} takes no resources= argument; it cannot declare {dict(resources)}")
        args, kwargs = self._init_args
        return type(self)(*args, **{**kwargs, "resources": resources})

    # -- the work ---------------------------------------------------------------

    @abc.abstractmethod
    def submit(self, call: TaskCall[Any]) -> F:
        """Place one task call and return its future at once.

        The future is completed with the State that ``call.run()`` returns
        where the call ran, or with a Crashed state if the backend lost it.

        Raises:
            RunnerNotStartedError: ``start()`` has not been called.
            RunnerShutdownError: ``shutdown()`` has been called.
        """

    def map(self, calls: Sequence[TaskCall[Any]]) -> list[F]:
        """Place many calls at once; override when the backend can batch them.

        Returns:
            One future per call, in the order of ``calls``.
        """
        return [self.submit(call) for call in calls]

    def map_lane(self, lane: Lane) -> None:
        """Run the calls of a lane (for runners with ``supports_lanes``), completing them through ``lane.complete``.

        Raises:
            RunnerShutdownError: ``shutdown()`` has been called.
        """
        raise NotImplementedError(f"{type(self).__name__} does not run lanes (supports_lanes is False)")

    @abc.abstractmethod
    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop accepting work and release what the runner started.

        Args:
            wait: Block until every accepted call has finished.
            cancel_pending: Complete calls that have not started with a
                Cancelled state (and interrupt running ones where the backend
                can; otherwise their futures end Cancelled and their results
                are discarded).

        Calling it again does nothing.
        """


def set_state(future: TaskFuture[Any], state: State[Any]) -> None:
    """Complete ``future`` with its final ``state`` (the first call wins; later ones are ignored).

    The one way a runner completes the futures it returned. Log records the
    run shipped with its state are replayed into this process's loggers,
    and the future's done-callbacks run in the calling thread.
    """
    future._set_state(state)


def count_lost_attempts(call: TaskCall[Any], lost: int) -> None:
    """Record that ``lost`` attempts of ``call`` died with their worker, before placing it again.

    A runner that runs a call again after the backend lost it (a killed
    worker, a lost node) calls this first, so the engine counts on from the
    lost attempts: ``task_run.run_count`` is then ``lost + 1`` in the new
    attempt, and a task with ``retries=N`` runs at most ``1 + N`` times in
    all. Place a lost call again only while ``lost <= call.task.retries``;
    after that, complete it with ``Crashed(..., run_count=lost)``.
    """
    call.task_run.run_count = lost


def run_call(call: TaskCall[Any]) -> State[Any]:
    """Run a call in this thread; a failure of the engine itself becomes Crashed.

    User exceptions never get here (the engine makes them Failed states);
    what does is a bug or a broken environment, reported as infrastructure.
    KeyboardInterrupt and SystemExit propagate.
    """
    try:
        return call.run()
    except Exception as exc:
        return Crashed(f"the engine failed running {call.task_run.name!r}: {exc!r}", exc=exc)


def unpicklable_argument_error(call: TaskCall[Any], destination: str) -> UnpicklableArgumentError:
    """The error for a call that will not pickle, naming the argument to blame.

    For runners that ship calls elsewhere (``requires_pickling``): when
    ``cloudpickle.dumps(call)`` fails, complete the future with
    ``Failed(unpicklable_argument_error(call, "a Dask worker"))``.
    """
    import cloudpickle

    for name, value in call.parameters.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return UnpicklableArgumentError(
                f"argument {name!r} of task run {call.task_run.name!r} cannot be pickled to send it to {destination} "
                f"({type(exc).__name__}: {exc}); pass something picklable, or use a thread-based runner"
            )
    return UnpicklableArgumentError(
        f"task {call.task.name!r} cannot be pickled to send it to {destination}; "
        "define it at module level or make what it refers to picklable"
    )


def unsatisfiable_resources(
    call: TaskCall[Any], capacity: Mapping[str, float], where: str, fix: str | None = None
) -> State[Any] | None:
    """The Failed state for a call whose request ``capacity`` can never meet, or None.

    For runners that place requests themselves: complete the future with
    this state instead of leaving the run to wait forever. ``where`` says
    whose capacity it is (``"the largest Dask worker"``), ``fix`` how to get
    more (a ``str.format`` template; ``{name}`` is the resource).
    """
    if not call.task.resources:
        return None
    reason = shortfall(call.task.resources, capacity, where, *((fix,) if fix is not None else ()))
    if reason is None:
        return None
    message = f"task run {call.task_run.name!r} cannot run: {reason}"
    return Failed(UnsatisfiableResourcesError(message), message=message, run_count=0)


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)


def sendable_state(state: State[Any], where: str) -> State[Any]:
    """``state`` if it can be pickled to travel back to the flow process, else a Failed state saying why.

    For code that runs calls elsewhere (``where``: "its Dask worker"): check
    the state before the backend tries to send it, so a result or exception
    that cannot be pickled ends that run Failed with one clear message
    instead of the backend's own serialization errors. The check pickles
    into nothing (large buffers out of band), so it costs little even for
    big results.
    """
    import pickle

    import cloudpickle

    problem: BaseException | None = None
    for pickler in (pickle.Pickler, cloudpickle.Pickler):
        try:
            pickler(_Sink(), protocol=5, buffer_callback=lambda _: None).dump(state)
            return state
        except Exception as exc:
            problem = problem or exc
    what = "result" if state.is_completed() else "exception"
    error = RunError(
        f"the {what} of this run cannot be sent back from {where} ({type(problem).__name__}: {problem}); "
        "return values and exceptions must be picklable"
    )
    return Failed(error, message=str(error), run_count=state.run_count)


def unreadable_outcome_state(task_run_name: str, exc: BaseException, destination: str) -> State[Any]:
    """The state for a run whose result or exception could not be brought back.

    For runners that ship states back from elsewhere: when unpickling a
    finished run's state fails because of what the run returned (not
    because the backend was lost), the run ends Failed — as on every
    runner — with the unpickling error as the cause.
    """
    failure = RunError(
        f"the result or exception of task run {task_run_name!r} cannot be sent back from {destination} "
        f"({type(exc).__name__}: {exc}); return values and exceptions must be picklable"
    )
    failure.__cause__ = exc
    return Failed(failure, message=str(failure))
