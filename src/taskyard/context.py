"""Run context: which flow run and task run the current code belongs to.

The context lives in :mod:`contextvars`, so it follows threads started by the
engine and asyncio tasks, and two flows running at once in one process never
see each other's runs. Task calls carry a snapshot (:class:`FlowRunInfo`,
:class:`TaskRunInfo`) to wherever they run.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from taskyard.exceptions import MissingContextError

__all__ = ("FlowRunInfo", "TaskRunInfo", "RunContext", "get_run_context", "tags", "current_tags", "in_sync_run")


# Flow parameters larger than this (pickled) do not travel with task calls.
MAX_SHIPPED_PARAMETERS = 64 * 1024


@dataclass(slots=True)
class FlowRunInfo:
    """What a task needs to know about the flow run it belongs to.

    Besides the run's identity it carries what the flow process decided at
    the start of the run, so a task running in another process sees the
    same: ``home`` (TASKYARD_HOME), ``persist_results``, ``log_prints``,
    the flow's ``result_storage``/``result_serializer`` (its tasks'
    defaults), ``pid``/``log_level`` (a task in another process captures its log
    records at that level and ships them back with its state), and
    ``dashboard_link``: the runner's dashboard (Dask, Ray), if it has one.
    """

    id: str
    name: str
    flow_name: str
    tags: frozenset[str] = frozenset()
    parameters: dict[str, Any] = field(default_factory=dict)
    run_count: int = 0
    home: str | None = None
    persist_results: bool = False
    log_prints: bool = False
    pid: int = 0
    log_level: int = 30
    result_storage: Any = None
    result_serializer: Any = None
    dashboard_link: str | None = None
    # Filled on first use, then travel with the info: a hash of the parameters
    # and the parameters as shipped (None: too large to ship with each call).
    _parameters_key: str | None = field(default=None, repr=False, compare=False)
    _wire_parameters: Any = field(default=False, repr=False, compare=False)

    def parameters_key(self) -> str:
        """A stable hash of the flow run's parameters (the FLOW_PARAMETERS cache policy uses it)."""
        if self._parameters_key is None:
            from taskyard.caching import stable_hash

            self._parameters_key = stable_hash(self.parameters)
        return self._parameters_key

    def __getstate__(self) -> dict[str, Any]:
        # Every task call carries this info to its worker. Large parameters
        # (a dataset given to the flow) stay in the flow process: the calls
        # carry only their hash, not a copy each.
        if self._wire_parameters is False:
            import cloudpickle

            try:
                small = len(cloudpickle.dumps(self.parameters)) <= MAX_SHIPPED_PARAMETERS
            except Exception:
                small = False
            if not small:
                self.parameters_key()
            self._wire_parameters = self.parameters if small else None
        state = {name: getattr(self, name) for name in self.__slots__}
        state["parameters"] = self._wire_parameters if self._wire_parameters is not None else {}
        state["_wire_parameters"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)


# The parameters of a task run not started yet: one empty dict shared by all of
# them (the engine gives a run its own when it starts), not a new one for each
# of a million-call map's runs (64 bytes apiece). Never mutated.
_NOT_STARTED: dict[str, Any] = {}


@dataclass(slots=True)
class TaskRunInfo:
    """Identity of one task run; ``run_count`` counts its attempts (1 on the first).

    The engine fills in, where the run happens: ``parameters`` (its bound
    arguments), ``state_type``/``state_name`` (``RUNNING``/``Running`` while
    it runs, its final state's in hooks), ``start_time`` (first attempt) and
    ``end_time`` (UTC datetimes, from ``started``/``ended``), as Prefect's
    ``TaskRun`` has them.

    ``transaction`` is the id of the transaction block the run was started
    in, if any (its cache record is then staged until the block commits).
    """

    id: str
    name: str
    task_name: str
    tags: frozenset[str] = frozenset()
    map_index: int = -1
    run_count: int = 0
    transaction: str | None = None
    flow_run_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=itertools.repeat(_NOT_STARTED).__next__)
    state_type: str | None = None
    state_name: str | None = None
    # time.time() of the first attempt's start and of the end (cheaper than
    # datetimes on every run); read as start_time / end_time.
    started: float | None = None
    ended: float | None = None
    # The runs submitted inside this run (taskyard.nested), while it runs.
    nested: Any = field(default=None, repr=False, compare=False)
    # The final state the engine's fast path made for this run in this
    # process, whose times are exactly ``started`` and ``ended``: the run
    # store reads those floats instead of converting the state's datetimes.
    final: Any = field(default=None, repr=False, compare=False)

    @property
    def start_time(self) -> datetime | None:
        """When the first attempt started (UTC), as in Prefect's ``TaskRun.start_time``."""
        return None if self.started is None else datetime.fromtimestamp(self.started, UTC)

    @property
    def end_time(self) -> datetime | None:
        """When the run reached its final state (UTC); set before its hooks run."""
        return None if self.ended is None else datetime.fromtimestamp(self.ended, UTC)

    def fixed(self) -> TaskRunInfo:
        """This run's identity as an object that stays as it is (a lane's moving one gives its call's own)."""
        return self

    def __reduce__(self) -> tuple[type[TaskRunInfo], tuple[Any, ...]]:
        # Rebuilt by its constructor from a tuple read in one C call: every
        # call of a map carries one. A run's nested pool and final state never travel with it.
        return TaskRunInfo, _wire_fields(self)


# The fields a task run carries to another process: all but the local-only
# ones at the end (its nested pool and final state), in constructor order.
_WIRE_NAMES = [f.name for f in fields(TaskRunInfo)]
_WIRE_NAMES = _WIRE_NAMES[: _WIRE_NAMES.index("nested")]
_wire_fields = operator.attrgetter(*_WIRE_NAMES)


@dataclass(frozen=True, slots=True)
class RunContext:
    """The answer of :func:`get_run_context`: ``task_run`` is None in a flow body.

    ``task_runner`` is the flow run's started runner in a flow body (as
    Prefect's ``FlowRunContext.task_runner``), and None in a task run, on
    every runner.
    """

    flow_run: FlowRunInfo | None
    task_run: TaskRunInfo | None
    task_runner: Any = None

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters of the task run (in a task) or of the flow run (in a flow body)."""
        if self.task_run is not None:
            return self.task_run.parameters
        return self.flow_run.parameters if self.flow_run is not None else {}


# Set by the engine around a task attempt and a flow body, wherever they run.
task_run_var: ContextVar[TaskRunInfo | None] = ContextVar("taskyard_task_run", default=None)
flow_run_var: ContextVar[FlowRunInfo | None] = ContextVar("taskyard_flow_run", default=None)
# The flow run in progress in this process (flow body only): its dispatcher.
flow_state_var: ContextVar[Any] = ContextVar("taskyard_flow_state", default=None)
_tags_var: ContextVar[frozenset[str]] = ContextVar("taskyard_tags", default=frozenset())


def get_run_context() -> RunContext:
    """Return the flow run and task run the calling code belongs to.

    Raises:
        MissingContextError: Called outside any flow or task run.
    """
    flow_run = flow_run_var.get()
    task_run = task_run_var.get()
    if flow_run is None and task_run is None:
        raise MissingContextError(
            "get_run_context() found no run: call it inside a @flow or @task function"
        )
    if task_run is not None:
        return RunContext(flow_run=flow_run, task_run=task_run.fixed())
    runner = getattr(getattr(flow_state_var.get(), "dispatcher", None), "runner", None)
    return RunContext(flow_run=flow_run, task_run=None, task_runner=runner)


@contextlib.contextmanager
def tags(*names: str) -> Iterator[frozenset[str]]:
    """Add tags to every task run (and flow run) created inside the block.

    Example::

        with tags("db", "nightly"):
            load.submit(table)
    """
    current = _tags_var.get() | frozenset(names)
    token = _tags_var.set(current)
    try:
        yield current
    finally:
        _tags_var.reset(token)


def in_sync_run() -> bool:
    """True inside a flow or task run whose thread runs no event loop.

    There an async task or flow called directly cannot be awaited, so it is
    run to its end instead (outside any run it returns a coroutine to await).
    """
    if flow_run_var.get() is None and task_run_var.get() is None:
        return False
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def current_tags() -> frozenset[str]:
    """The tags added by enclosing ``with tags(...)`` blocks."""
    return _tags_var.get()
