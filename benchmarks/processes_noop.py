"""processes: a 10,000-task no-op map timed inside a running flow, beside raw ``ProcessPoolExecutor.map``.

Prints, per task, the wall time and the CPU time of the flow process and of
the worker processes (median of ``--repeat`` maps on one started pool),
for the taskyard runner or for the raw pool (``Executor.map`` with
``chunksize=N // 8`` on the same 2 workers, forkserver)::

    python benchmarks/processes_noop.py raw
    python benchmarks/processes_noop.py taskyard

CPU time is less disturbed than wall time by other work on a shared
machine; worker CPU comes from psutil (10 ms ticks: a raw map's workers
show as 0).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import psutil

from taskyard import flow
from taskyard.bench.functions import noop, noop_task
from taskyard.runners import ProcessPoolTaskRunner

WORKERS = 2


def _workers_cpu() -> float:
    """CPU seconds of this process's descendants that do the work (not the fork server or tracker)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if child.ppid() == os.getpid():
                continue  # the fork server and the resource tracker
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _measure(run: Callable[[], object], n: int, repeat: int) -> tuple[float, float, float]:
    rows = []
    for _ in range(repeat):
        cpu, workers, wall = time.process_time(), _workers_cpu(), time.perf_counter()
        run()
        rows.append((time.perf_counter() - wall, time.process_time() - cpu, _workers_cpu() - workers))
    wall_s, flow_s, workers_s = (statistics.median(r[i] for r in rows) for i in range(3))
    return wall_s / n * 1e6, flow_s / n * 1e6, workers_s / n * 1e6


def raw(n: int, repeat: int) -> tuple[float, float, float]:
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(noop, range(4 * WORKERS)))
        return _measure(lambda: list(pool.map(noop, range(n), chunksize=n // (4 * WORKERS))), n, repeat)


def taskyard(n: int, repeat: int) -> tuple[float, float, float]:
    @flow(task_runner=ProcessPoolTaskRunner(max_workers=WORKERS))
    def timed() -> tuple[float, float, float]:
        noop_task.map(range(2 * WORKERS)).result()
        return _measure(lambda: noop_task.map(range(n)).result(), n, repeat)

    return timed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("raw", "taskyard"))
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    wall, flow_cpu, workers_cpu = (raw if args.side == "raw" else taskyard)(args.size, args.repeat)
    print(
        f"{args.side}: {wall:.2f} µs/task wall, CPU {flow_cpu:.2f} µs/task in the flow process, "
        f"{workers_cpu:.2f} in the workers (load average {os.getloadavg()[0]:.1f})"
    )
