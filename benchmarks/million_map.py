"""A million-task no-op map: tasks/s and the flow process's peak RSS, per runner.

Each runner runs in a fresh interpreter (so peak RSS is that run's alone),
one flow run that maps a no-op task over ``--size`` items and reads every
result::

    python benchmarks/million_map.py --runners threads,dask --size 1000000

``--trace N`` instead maps N items under tracemalloc and prints where the
bytes that stay allocated per task go (the top lines by size), in the flow
process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from taskyard import flow, task


@task
def noop(x: int) -> int:
    return x


@flow(validate_parameters=False)
def big_map(n: int) -> float:
    start = time.perf_counter()
    futures = noop.map(range(n))
    total = 0
    for value in futures.result():
        total += value
    assert total == n * (n - 1) // 2
    return time.perf_counter() - start


def _runner(name: str) -> Any:
    if name == "dask":
        from taskyard_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})
    return name


def _one(name: str, size: int) -> dict[str, Any]:
    seconds = big_map.with_options(task_runner=_runner(name))(size)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"runner": name, "size": size, "seconds": seconds, "tasks_per_s": size / seconds, "peak_rss_mb": peak_mb}


def _trace(name: str, size: int) -> None:
    import gc
    import tracemalloc

    @flow(validate_parameters=False)
    def traced(n: int) -> None:
        noop.map(range(10)).result()
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        futures = noop.map(range(n))
        futures.result()
        gc.collect()
        after = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
        stats = after.compare_to(before, "lineno")
        kept = sum(s.size_diff for s in stats)
        print(f"{name}: {kept / n:.0f} bytes per task kept after the map, peak {peak / n:.0f} bytes per task")
        for stat in stats[:10]:
            print(f"  {stat.size_diff / n:7.1f} B/task  {stat.traceback[0]}")
        del futures

    traced.with_options(task_runner=_runner(name))(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default="threads,dask")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--trace", type=int, default=0, help="map this many under tracemalloc instead")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TASKYARD_PROGRESS", "0")
    if args.child:
        if args.trace:
            _trace(args.child, args.trace)
        else:
            print(json.dumps(_one(args.child, args.size)))
        return
    rows = []
    for name in args.runners.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size), "--trace", str(args.trace)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        if args.trace:
            print(done.stdout, end="")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name:8} {row['size']:,} tasks in {row['seconds']:.1f} s = {row['tasks_per_s']:,.0f} tasks/s; peak RSS {row['peak_rss_mb']:.0f} MB")
    if args.json and rows:
        with open(args.json, "w") as fh:
            json.dump({"results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
