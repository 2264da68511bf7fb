"""``get_dask_client``: a Dask client for code inside a task run (Prefect's ``prefect_dask.get_dask_client``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ("get_dask_client",)


@contextlib.contextmanager
def get_dask_client(timeout: float | str | None = None, **client_kwargs: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for the cluster the calling code runs on.

    Inside a task run on a Dask worker it is ``distributed.worker_client``
    (the worker thread leaves the worker's thread count while the block
    runs, so work submitted from it cannot deadlock the worker). In the
    flow process of a flow on ``DaskTaskRunner`` it is that runner's client.

    Raises:
        RuntimeError: Called where no Dask cluster is in use.
    """
    import distributed

    try:
        distributed.get_worker()
        on_worker = True
    except ValueError:
        on_worker = False
    if on_worker:
        with distributed.worker_client(timeout=timeout, **client_kwargs) as client:
            yield client
        return
    yield _flow_client(distributed)


def _flow_client(distributed: Any) -> Any:
    """The client of the flow run's DaskTaskRunner, else the process's default client."""
    from taskyard import get_run_context
    from taskyard.exceptions import MissingContextError
    from taskyard_dask.runner import DaskTaskRunner

    with contextlib.suppress(MissingContextError):
        runner = get_run_context().task_runner
        if isinstance(runner, DaskTaskRunner):
            return runner.client
    try:
        return distributed.get_client()
    except ValueError:
        raise RuntimeError(
            "get_dask_client() found no Dask cluster: call it inside a task run on DaskTaskRunner, "
            "or in the body of a flow that uses it"
        ) from None
