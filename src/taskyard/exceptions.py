"""Exceptions raised by taskyard.

Every class derives from :class:`TaskyardError`; where a builtin names the same
condition, the class derives from that builtin too, so callers may catch
either::

    TaskyardError
    ├── RunnerNotFound (LookupError)          unknown or uninstalled runner name
    ├── RunnerError (RuntimeError)
    │   ├── RunnerNotStartedError             submit() before start()
    │   ├── RunnerShutdownError               submit() after shutdown()
    │   └── BrokenRunner                      the backend itself failed
    ├── MappingError (ValueError)
    │   ├── MappingLengthMismatch             iterables of unequal length
    │   └── MappingMissingIterable            map() with nothing to map over
    ├── ReservedArgumentError (TypeError)     a task parameter named wait_for
    ├── ParameterValidationError (ValueError) a flow parameter of the wrong type
    ├── NoActiveFlowError (RuntimeError)      submit()/map() outside a flow or task run
    ├── UnpicklableArgumentError (TypeError)  an argument a cluster cannot ship
    ├── RunError                              raised by State.result() for a run
    │   ├── UpstreamTaskError                 that never ran: an upstream failed
    │   ├── CrashedRunError                   lost by the infrastructure
    │   ├── CancelledRunError                 cancelled before it finished
    │   ├── UnsatisfiableResourcesError       that asked for more than the runner has
    │   └── MissingResultError                whose result was not kept
    │   └── FlowRunError                      a flow run started with wait=True did not complete
    ├── TaskTimeoutError (TimeoutError)       a task or flow over timeout_seconds
    ├── MissingContextError (RuntimeError)    get_run_context() outside a run
    └── RunNotFound (LookupError)             no recorded flow run with that id
"""

from __future__ import annotations

__all__ = (
    "TaskyardError",
    "RunnerNotFound",
    "RunnerError",
    "RunnerNotStartedError",
    "RunnerShutdownError",
    "BrokenRunner",
    "MappingError",
    "MappingLengthMismatch",
    "MappingMissingIterable",
    "ReservedArgumentError",
    "ParameterValidationError",
    "NoActiveFlowError",
    "UnpicklableArgumentError",
    "RunError",
    "UpstreamTaskError",
    "CrashedRunError",
    "CancelledRunError",
    "UnsatisfiableResourcesError",
    "MissingResultError",
    "TaskTimeoutError",
    "MissingContextError",
    "FlowRunError",
    "RunNotFound",
)


class TaskyardError(Exception):
    """Base class of every exception taskyard raises on its own account."""


class RunnerNotFound(TaskyardError, LookupError):
    """No runner is registered under a name, or its package is not installed."""


class RunnerError(TaskyardError, RuntimeError):
    """A task runner was used against its lifecycle, or its backend failed."""


class RunnerNotStartedError(RunnerError):
    """Work was submitted to a runner that has not been started."""


class RunnerShutdownError(RunnerError):
    """Work was submitted to a runner that has been shut down."""


class BrokenRunner(RunnerError):
    """The runner's backend failed in a way it could not recover from."""


class MappingError(TaskyardError, ValueError):
    """The arguments of ``Task.map`` do not describe a valid mapping."""


class MappingLengthMismatch(MappingError):
    """The iterables given to ``Task.map`` have different lengths."""


class MappingMissingIterable(MappingError):
    """``Task.map`` was called without any iterable argument."""


class ReservedArgumentError(TaskyardError, TypeError):
    """A task function uses a parameter name taskyard reserves."""


class ParameterValidationError(TaskyardError, ValueError):
    """A flow parameter failed validation against the flow's type hints."""


class NoActiveFlowError(TaskyardError, RuntimeError):
    """``submit`` or ``map`` was called where no flow is running."""


class UnpicklableArgumentError(TaskyardError, TypeError):
    """An argument cannot be serialized for a runner that ships calls elsewhere."""


class RunError(TaskyardError):
    """Raised by ``State.result()`` for a run that has no result to give."""


class UpstreamTaskError(RunError):
    """The run never started because a run it depends on did not complete."""


class CrashedRunError(RunError):
    """The run was lost by the infrastructure (worker died, node lost, interrupt)."""


class CancelledRunError(RunError):
    """The run was cancelled before it finished."""


class UnsatisfiableResourcesError(RunError):
    """A run asked for resources its runner can never offer, so it never started."""


class MissingResultError(RunError):
    """The run completed but its result is not available here."""


class TaskTimeoutError(TaskyardError, TimeoutError):
    """A task or flow ran past its ``timeout_seconds``."""


class MissingContextError(TaskyardError, RuntimeError):
    """A run-context helper was called outside any flow or task run."""


class FlowRunError(RunError):
    """A flow run started by ``taskyard.runs`` did not complete.

    Attributes:
        flow_run_id: The id of that flow run.
        state: Its final State (Failed, Crashed or Cancelled).
    """

    def __init__(self, message: str, flow_run_id: str, state: object) -> None:
        super().__init__(message)
        self.flow_run_id = flow_run_id
        self.state = state

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.flow_run_id, self.state))


class RunNotFound(TaskyardError, LookupError):
    """No flow run (or task run) with the given id is recorded in the store."""
