"""taskyard on Dask vs raw Dask, on one 2-process LocalCluster (2 workers x 1 thread).

Run:  python3 plugins/taskyard-dask/benchmarks/bench_dask.py [--repeat 3] [--json FILE]

Workloads (each timed from the first submit/map to the last result; cluster
start-up and the flow run's client connection are excluded):

* noop-map:  5,000 no-op tasks: ``noop.map(range(N)).result()`` vs ``client.map`` + ``client.gather``.
* cpu-map:   40 x 50 ms pure-Python tasks; speed-up over a plain loop in this process.
* large-arg: a 50 MB bytes value shared by 20 runs vs ``client.scatter`` once + ``client.map``.

taskyard flows use ``DaskTaskRunner(address=<the cluster>)`` so both sides run
on the same workers; the first round of each workload is a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

N_NOOP = 5000
N_CPU, CPU_SECONDS = 40, 0.05
N_LARGE, LARGE_MB = 20, 50


def noop(x: int) -> int:
    return x


def spin(seconds: float) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def length(blob: bytes, i: int) -> int:
    return len(blob) + i


noop_task = task(noop, name="noop")
spin_task = task(spin, name="spin")
length_task = task(length, name="length")


def timed_flow(address: str, body: Callable[[], Any]) -> float:
    """Run ``body`` in a flow on the cluster; return the seconds spent in ``body``."""
    took: list[float] = []

    @flow(task_runner=DaskTaskRunner(address=address), name="bench")
    def bench() -> None:
        started = time.perf_counter()
        body()
        took.append(time.perf_counter() - started)

    bench()
    return took[0]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_of(repeat: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = [fn() for _ in range(repeat)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    client = Client(cluster, set_as_default=False)
    address = cluster.scheduler_address
    results: list[dict[str, Any]] = []

    def record(workload: str, ours: tuple[float, list[float]], raw: tuple[float, list[float]], **extra: Any) -> None:
        row = {
            "workload": workload,
            "taskyard_median_s": round(ours[0], 4),
            "taskyard_runs_s": [round(t, 4) for t in ours[1]],
            "raw_median_s": round(raw[0], 4),
            "raw_runs_s": [round(t, 4) for t in raw[1]],
            "ratio_to_raw": round(ours[0] / raw[0], 3),
            **extra,
        }
        results.append(row)
        print(json.dumps(row))

    try:
        # noop-map -------------------------------------------------------------------
        raw = median_of(args.repeat, lambda: timed(lambda: client.gather(client.map(noop, range(N_NOOP), pure=False))))
        ours = median_of(args.repeat, lambda: timed_flow(address, lambda: noop_task.map(range(N_NOOP)).result()))
        record("noop-map", ours, raw, size=N_NOOP, taskyard_us_per_task=round(ours[0] / N_NOOP * 1e6, 1),
               raw_us_per_task=round(raw[0] / N_NOOP * 1e6, 1))

        # cpu-map --------------------------------------------------------------------
        sequential = timed(lambda: [spin(CPU_SECONDS) for _ in range(N_CPU)])
        seconds = [CPU_SECONDS] * N_CPU
        raw = median_of(args.repeat, lambda: timed(lambda: client.gather(client.map(spin, seconds, pure=False))))
        ours = median_of(args.repeat, lambda: timed_flow(address, lambda: spin_task.map(seconds).result()))
        record("cpu-map", ours, raw, size=N_CPU, sequential_s=round(sequential, 4),
               raw_speedup=round(sequential / raw[0], 3), taskyard_speedup=round(sequential / ours[0], 3),
               speedup_ratio=round(raw[0] / ours[0], 3))

        # large-arg ------------------------------------------------------------------
        blob = b"x" * (LARGE_MB * 1_000_000)

        def raw_large() -> None:
            shared = client.scatter([blob], hash=False)[0]
            client.gather(client.map(length, [shared] * N_LARGE, range(N_LARGE), pure=False))
            del shared

        raw = median_of(args.repeat, lambda: timed(raw_large))
        ours = median_of(args.repeat, lambda: timed_flow(address, lambda: length_task.map(blob, range(N_LARGE)).result()))
        record("large-arg", ours, raw, size=N_LARGE, megabytes=LARGE_MB)
    finally:
        client.close()
        cluster.close()

    out = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "cluster": "LocalCluster(n_workers=2, threads_per_worker=1, processes=True), 127.0.0.1",
        "repeat": args.repeat,
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
