"""How soon the first future of a large map is done: ``as_completed`` over a no-op map.

For each runner it runs ``--repeat`` flow runs; each times, from the
``map`` call inside the flow, how long until ``as_completed`` yields its
first future and until the last one, and prints the median and min–max of
both. Batching must not make a map's first results wait for the whole map::

    python benchmarks/first_result.py --runners processes,dask --size 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from taskyard import as_completed, flow, task


@task
def noop(x: int) -> int:
    return x


@flow(validate_parameters=False)
def first_and_last(n: int) -> tuple[float, float]:
    noop.map(range(4)).result()  # workers up: not timed
    start = time.perf_counter()
    futures = noop.map(range(n))
    first = None
    for _ in as_completed(futures):
        if first is None:
            first = time.perf_counter() - start
    assert futures.result() == list(range(n))
    return first or 0.0, time.perf_counter() - start


def _runner(name: str, workers: int) -> Any:
    if name == "dask":
        from taskyard_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    if name == "processes":
        from taskyard.runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default="processes,dask")
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    rows = []
    for name in args.runners.split(","):
        timed = first_and_last.with_options(task_runner=_runner(name, workers))
        runs = [timed(args.size) for _ in range(args.repeat)]
        firsts, lasts = [r[0] for r in runs], [r[1] for r in runs]
        row = {
            "runner": name, "size": args.size, "repeat": args.repeat,
            "first_median_s": statistics.median(firsts), "first_min_s": min(firsts), "first_max_s": max(firsts),
            "last_median_s": statistics.median(lasts), "last_min_s": min(lasts), "last_max_s": max(lasts),
        }  # fmt: skip
        rows.append(row)
        print(
            f"{name:10} first future {row['first_median_s'] * 1e3:7.0f} ms ({min(firsts) * 1e3:.0f}–{max(firsts) * 1e3:.0f}); "
            f"whole map {row['last_median_s']:6.2f} s ({min(lasts):.2f}–{max(lasts):.2f}); {args.size:,} tasks, median of {args.repeat}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
