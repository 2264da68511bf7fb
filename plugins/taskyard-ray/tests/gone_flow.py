"""A flow on a Ray cluster that the test kills while a run is outstanding (run as a script)."""

from __future__ import annotations

import sys
import time

from taskyard import flow, task
from taskyard_ray import RayTaskRunner


@task
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow(task_runner=RayTaskRunner(address=sys.argv[1]))
def outlives_its_cluster() -> None:
    future = sleepy.submit(600)
    print("SUBMITTED", flush=True)
    future.wait()
    print("RUN", future.state.type.value, future.state.message, flush=True)


if __name__ == "__main__":
    outlives_its_cluster(return_state=True)
    print("FLOW ENDED", flush=True)
