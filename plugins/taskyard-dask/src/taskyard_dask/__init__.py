"""taskyard-dask: run taskyard flows on a Dask cluster.

::

    from taskyard import flow, task
    from taskyard_dask import DaskTaskRunner, dask_options

    @flow(task_runner=DaskTaskRunner())                  # a temporary LocalCluster
    def pipeline(): ...

    @flow(task_runner=DaskTaskRunner(address="tcp://127.0.0.1:8786"))   # a running cluster
    def pipeline_on_cluster(): ...

Importing this package does not import dask or distributed; the runner does
when it starts. The runner is also registered as ``"dask"``
(``@flow(task_runner="dask")``).
"""

from taskyard_dask.client import get_dask_client
from taskyard_dask.options import dask_options
from taskyard_dask.runner import DaskTaskFuture, DaskTaskRunner

__version__ = "0.1.0"

__all__ = ("DaskTaskRunner", "DaskTaskFuture", "dask_options", "get_dask_client")
