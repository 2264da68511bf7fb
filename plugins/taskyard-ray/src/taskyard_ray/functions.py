"""The runner's Ray remote functions: one per task, flow run and set of options, made once.

The task and the flow run's context live inside the function
(:func:`taskyard_ray.worker.task_function`), so Ray pickles and exports
them once, not with every call of a map. A function with options is
``.options(...)``'d once when it is made, not per call. Ray's own retries
are off (``max_retries=0``): taskyard's ``retries`` decide, counting a
lost worker as an attempt.
"""

from __future__ import annotations

from typing import Any

from taskyard.runners.base import TaskCall

__all__ = ("RemoteFunctions", "MAX_FUNCTIONS")

# Remote functions kept per runner; the oldest go first.
MAX_FUNCTIONS = 256


class RemoteFunctions:
    """The remote functions of one runner, cached.

    Args:
        ray: The ``ray`` module.
        log_sink: The name of the actor the runs stream their log records to
            (see :mod:`taskyard_ray.logs`), or None.
    """

    def __init__(self, ray: Any, log_sink: str | None) -> None:
        self._remote = ray.remote(num_returns=2, max_retries=0, retry_exceptions=False)
        self._log_sink = log_sink
        self._cache: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}

    def get(self, call: TaskCall[Any], options: dict[str, Any], batch: bool = False) -> Any:
        """The remote function for ``call``'s task and flow run with ``options`` (``batch``: for a batch of calls)."""
        from taskyard_ray.worker import batch_function, task_function

        task, flow_run = call.task, call.flow_run
        key = (
            id(task), id(flow_run), getattr(flow_run, "run_count", None),
            repr(sorted(options.items())) if options else "", batch,
        )  # fmt: skip
        found = self._cache.get(key)
        if found is not None and found[0] is task and found[1] is flow_run:
            return found[2]
        make = batch_function if batch else task_function
        function = self._remote(make(task, flow_run, self._log_sink))
        if options:
            function = function.options(**options)
        if len(self._cache) >= MAX_FUNCTIONS:
            self._cache.pop(next(iter(self._cache)))
        # The task and flow run are kept with it, so their ids name them while it is cached.
        self._cache[key] = (task, flow_run, function)
        return function

    def clear(self) -> None:
        """Forget every function (the runner shuts down)."""
        self._cache.clear()
