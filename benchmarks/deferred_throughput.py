"""Deferred no-op runs per second through one and two task workers, against submit in a flow.

Run from the repository root::

    python benchmarks/deferred_throughput.py --runs 2000 --repeat 3 --json benchmarks/deferred-2cpu.json

Each measurement is timed from the first enqueue (or the first submit) to
the last result read back, in a fresh TASKYARD_HOME:

* ``submit-in-flow``: ``noop.map(range(N))`` in a flow on the thread runner;
* ``workers-1`` / ``workers-2``: N runs enqueued with ``noop.map(..., deferred=True)``
  by this process and run by 1 or 2 ``taskyard worker`` processes (started
  and warmed up before the clock starts), results read through the futures;
* ``enqueue-only``: the ``map(deferred=True)`` call alone (one transaction);
* ``store-claim-finish``: the store's own work per run with no engine and no
  result file — claim 10 at a time and write their final states, in one
  process — the ceiling the queue itself puts on a worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskyard import flow, task


@task
def noop(i: int) -> int:
    return i


@flow
def submit_in_flow(n: int) -> None:
    noop.map(range(n)).wait()


def _fresh_home() -> str:
    home = tempfile.mkdtemp(prefix="taskyard-bench-")
    os.environ["TASKYARD_HOME"] = home
    return home


def measure_submit(n: int) -> float:
    _fresh_home()
    submit_in_flow(10)  # warm: imports, first runner start
    start = time.perf_counter()
    submit_in_flow(n)
    return time.perf_counter() - start


def measure_workers(n: int, workers: int, limit: int) -> float:
    home = _fresh_home()
    here = Path(__file__).resolve()
    env = {**os.environ, "TASKYARD_HOME": home, "TASKYARD_LOGGING_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "taskyard", "worker", f"{here}:noop", "--limit", str(limit)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(workers)
    ]
    try:
        noop.map(range(4 * workers), deferred=True).result(timeout=120)  # every worker up and warm
        start = time.perf_counter()
        results = noop.map(range(n), deferred=True).result(timeout=600)
        elapsed = time.perf_counter() - start
        assert results == list(range(n))
        return elapsed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def measure_enqueue(n: int) -> float:
    _fresh_home()
    noop.map(range(10), deferred=True)
    start = time.perf_counter()
    noop.map(range(n), deferred=True)
    return time.perf_counter() - start


def measure_store(n: int) -> float:
    from taskyard.store.db import connect
    from taskyard.store.taskqueue import Finished, claim

    home = _fresh_home()
    noop.map(range(n), deferred=True)
    conn = connect(home)
    start = time.perf_counter()
    done: list[Finished] = []
    while True:
        got = claim(conn, {"noop": 0}, 10, "bench", os.getpid(), also=done)
        if not got:
            break
        now = time.time()
        done = [Finished(c.id, "COMPLETED", "Completed", None, now, 1, now, None, None) for c in got]
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=int, default=10, help="each worker's --limit")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    cases: dict[str, Any] = {
        "submit-in-flow": lambda: measure_submit(args.runs),
        "workers-1": lambda: measure_workers(args.runs, 1, args.limit),
        "workers-2": lambda: measure_workers(args.runs, 2, args.limit),
        "enqueue-only": lambda: measure_enqueue(args.runs),
        "store-claim-finish": lambda: measure_store(args.runs),
    }
    results = []
    for name, fn in cases.items():
        times = [fn() for _ in range(args.repeat)]
        median = statistics.median(times)
        results.append({"case": name, "runs": args.runs, "median_s": median, "min_s": min(times), "max_s": max(times),
                        "runs_per_s": args.runs / median})  # fmt: skip
        print(f"{name:<20} {args.runs / median:>9.0f} runs/s   (median {median:.3f} s of {args.repeat})", flush=True)
    if args.json:
        machine = {
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],  # a shared machine: say how busy it was
        }  # fmt: skip
        command = f"python benchmarks/deferred_throughput.py --runs {args.runs} --repeat {args.repeat} --limit {args.limit}"
        args.json.write_text(json.dumps({"command": command, "machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
