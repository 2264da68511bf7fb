"""The engine's own time per call: ``TaskCall.run()`` of a no-op task, in a flow, no runner.

Makes 20,000 calls of a plain no-op task inside a flow run and times running
them one after another in the flow's thread; prints the median over
``--repeat`` rounds, in µs per call::

    python benchmarks/engine_call.py --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from taskyard import flow, task
from taskyard.context import TaskRunInfo, flow_run_var
from taskyard.engine import TaskCall


@task
def noop(x: int) -> int:
    return x


@flow
def per_call(repeat: int, n: int = 20_000) -> float:
    flow_run = flow_run_var.get()

    def one() -> float:
        calls = [TaskCall(noop, {"x": i}, TaskRunInfo(os.urandom(16).hex(), "noop", "noop"), flow_run) for i in range(n)]
        start = time.perf_counter()
        for call in calls:
            call.run()
        return (time.perf_counter() - start) / n * 1e6

    return statistics.median(one() for _ in range(repeat))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    print(f"{per_call(parser.parse_args().repeat):.1f} µs per call")
