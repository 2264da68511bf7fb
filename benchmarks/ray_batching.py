"""The Ray runner batched and unbatched, beside raw ``ray.remote`` + ``ray.get``, on one Ray.

One local Ray (``--cpus`` CPUs, 200 MB of object store) is started once;
for each workload the raw baseline, the runner with its default adaptive
batching and the runner with ``batch_size=1`` take turns, ``--repeat``
times, and the medians are printed (and written with ``--json``). Each
taskyard figure is timed inside a running flow, from the ``map`` call to
the last result, as the raw one is from the first ``.remote`` to the
``ray.get``::

    RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled \\
        python benchmarks/ray_batching.py --noop 20000,5000 --cpu 40 --repeat 3

Workloads: ``noop`` (maps of no-op tasks of the given sizes) and ``cpu``
(a map of pure-Python tasks of ~45 ms each; ``speed-up`` is the plain loop's
time over the map's, the loop timed in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from taskyard import flow, task
from taskyard.bench.functions import CPU_LOOPS, spin

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def noop(x: int) -> int:
    return x


noop_task = task(name="noop")(noop)
spin_task = task(name="spin")(spin)


def _raw(fn: Callable[[int], int], n: int) -> float:
    import ray

    remote = ray.remote(fn)
    start = time.perf_counter()
    ray.get([remote.remote(i) for i in range(n)])
    return time.perf_counter() - start


def _taskyard(t: Any, n: int, batch_size: int | None) -> float:
    from taskyard_ray import RayTaskRunner

    @flow(task_runner=RayTaskRunner(batch_size=batch_size), validate_parameters=False, log_prints=False)
    def timed(n: int) -> float:
        t.map(range(2)).result()  # the remote functions exported: not timed
        start = time.perf_counter()
        results = t.map(range(n)).result()
        elapsed = time.perf_counter() - start
        assert len(results) == n
        return elapsed

    return timed(n)  # type: ignore[no-any-return]


def _row(name: str, n: int, fn: Callable[[int], int], t: Any, repeat: int) -> dict[str, Any]:
    raw: list[float] = []
    batched: list[float] = []
    unbatched: list[float] = []
    for _ in range(repeat):  # interleaved, so a change in the machine's load touches all three alike
        raw.append(_raw(fn, n))
        batched.append(_taskyard(t, n, None))
        unbatched.append(_taskyard(t, n, 1))
    row = {
        "workload": name, "size": n, "repeat": repeat,
        "raw_s": statistics.median(raw), "batched_s": statistics.median(batched),
        "unbatched_s": statistics.median(unbatched),
        "raw_all": raw, "batched_all": batched, "unbatched_all": unbatched,
    }  # fmt: skip
    row["batched_x_raw"] = row["batched_s"] / row["raw_s"]
    row["unbatched_x_raw"] = row["unbatched_s"] / row["raw_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop", default="20000,5000", help="sizes of the no-op maps (comma-separated; '' for none)")
    parser.add_argument("--cpu", type=int, default=40, help="size of the CPU-bound map (0: none)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import ray

    ray.init(
        address="local", num_cpus=args.cpus, object_store_memory=200 * 2**20, include_dashboard=False,
        _node_ip_address="127.0.0.1", log_to_driver=False,
    )  # fmt: skip
    rows = []
    try:
        _raw(noop, 200)  # workers up
        for n in [int(s) for s in args.noop.split(",") if s]:
            rows.append(_row("noop-map", n, noop, noop_task, args.repeat))
        if args.cpu:
            start = time.perf_counter()
            for i in range(args.cpu):
                spin(i)
            loop = time.perf_counter() - start
            row = _row("cpu-map", args.cpu, spin, spin_task, args.repeat)
            row["loop_s"] = loop
            for key in ("raw", "batched", "unbatched"):
                row[f"{key}_speedup"] = loop / row[f"{key}_s"]
            rows.append(row)
    finally:
        ray.shutdown()
    for row in rows:
        line = (
            f"{row['workload']:9} n={row['size']:>6}  raw {row['raw_s']:8.3f} s  batched {row['batched_s']:8.3f} s "
            f"({row['batched_x_raw']:.3f}× raw)  batch_size=1 {row['unbatched_s']:8.3f} s ({row['unbatched_x_raw']:.3f}× raw)"
        )
        if "loop_s" in row:
            line += (
                f"  speed-up over the loop ({row['loop_s']:.2f} s, {CPU_LOOPS:,} steps a task): raw {row['raw_speedup']:.2f}×, "
                f"batched {row['batched_speedup']:.2f}×, batch_size=1 {row['unbatched_speedup']:.2f}×"
            )
        print(line)
    print(f"load average: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "loadavg": os.getloadavg(), "cpus": args.cpus}, fh, indent=1)


if __name__ == "__main__":
    main()
