"""What recording runs in the store costs: the 10,000-task no-op map on threads, with and without.

Usage::

    python3 benchmarks/recording_overhead.py [--size 10000] [--repeat 15] [--json FILE]

Runs with ``TASKYARD_RECORD=1`` and ``=0`` alternate in one process (one
warm-up run first), against a fresh TASKYARD_HOME, so both see the same
machine load; each repeat swaps which goes first (off, on, on, off, ...), so
a drift in the load, or what one run leaves to the next, favours neither. Reports the median wall time and the median process CPU time
of each, and the added fraction. CPU time is the steadier figure on a shared
machine; the flow is GIL-bound, so wall time follows it when the machine is
quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from taskyard import flow, task


@task
def noop(x: int) -> int:
    return x


@flow(task_runner="threads")
def noop_map(n: int) -> list[int]:
    return noop.map(range(n)).result()


def measure(size: int, repeat: int) -> dict[str, Any]:
    """Alternate recorded and unrecorded runs; medians of wall and CPU seconds."""
    noop_map(100)
    wall: dict[str, list[float]] = {"0": [], "1": []}
    cpu: dict[str, list[float]] = {"0": [], "1": []}
    for turn in range(repeat):
        for mode in ("0", "1") if turn % 2 == 0 else ("1", "0"):
            os.environ["TASKYARD_RECORD"] = mode
            started, cpu_started = time.perf_counter(), time.process_time()
            noop_map(size)
            wall[mode].append(time.perf_counter() - started)
            cpu[mode].append(time.process_time() - cpu_started)
    out: dict[str, Any] = {"size": size, "repeat": repeat}
    for label, samples in (("wall", wall), ("cpu", cpu)):
        off, on = statistics.median(samples["0"]), statistics.median(samples["1"])
        out[label] = {"off_s": off, "on_s": on, "added": on / off - 1, "off_samples": samples["0"], "on_samples": samples["1"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    os.environ["TASKYARD_HOME"] = tempfile.mkdtemp(prefix="taskyard-recording-")
    result = measure(args.size, args.repeat)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load": os.getloadavg()}
    for label in ("wall", "cpu"):
        row = result[label]
        print(
            f"{label:>4}: recording off {row['off_s'] * 1e3:7.1f} ms   on {row['on_s'] * 1e3:7.1f} ms   "
            f"added {row['added'] * 100:+5.1f}%"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
