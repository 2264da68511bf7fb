"""taskyard-ray: run taskyard flows on Ray.

::

    from taskyard import flow, task
    from taskyard_ray import RayTaskRunner, ray_options

    @flow(task_runner=RayTaskRunner())                          # a fresh local Ray on 127.0.0.1
    def pipeline(): ...

    @flow(task_runner=RayTaskRunner(address="127.0.0.1:6379"))  # a running cluster
    def pipeline_on_cluster(): ...

Importing this package does not import ray; the runner does when it starts.
The runner is also registered as ``"ray"`` (``@flow(task_runner="ray")``).
"""

from taskyard_ray.options import ray_options
from taskyard_ray.runner import RayTaskRunner

__all__ = ("RayTaskRunner", "ray_options", "__version__")

__version__ = "0.1.0"
