"""processes: a 10,000-task no-op map timed inside a running flow, beside raw ``ProcessPoolExecutor.map``.

Prints, per task, the wall time and the CPU time of the flow process and of
the worker processes (median of ``--repeat`` maps on one started pool),
for the taskyard runner or for the raw pool (``Executor.map`` with
``chunksize=N // 8`` on the same 2 workers, forkserver), or both in one run
(``both``: the two sides alternate, round by round, and the ratio of their
wall-time medians is printed)::

    python benchmarks/processes_noop.py raw
    python benchmarks/processes_noop.py taskyard
    python benchmarks/processes_noop.py both --rounds 2

``floor`` times, in this process alone (no pool, no threads), what the flow
process does per call of such a map with the objects the API promises: its
run identity and call, its future, its share of a packed batch, its State
decoded and set on its future — the least the flow process spends per
call, whatever the pipes and workers cost.

CPU time is less disturbed than wall time by other work on a shared
machine; worker CPU comes from psutil (10 ms ticks: a raw map's workers
show as 0).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import psutil

from taskyard import flow
from taskyard.bench.functions import noop, noop_task
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.futures import TaskFuture
from taskyard.gcpause import collector_paused
from taskyard.runners import ProcessPoolTaskRunner
from taskyard.runners.process_worker import decode_state, encode_state, pack_calls, write_frame
from taskyard.runners.state_pages import frames_in
from taskyard.states import Completed

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
    if VERBOSE:
        print(
            "  maps (wall/flow CPU/workers CPU, µs/task):",
            ", ".join(f"{w / n * 1e6:.1f}/{f / n * 1e6:.1f}/{k / n * 1e6:.1f}" for w, f, k in rows),
        )
    wall_s, flow_s, workers_s = (statistics.median(r[i] for r in rows) for i in range(3))
    return wall_s / n * 1e6, flow_s / n * 1e6, workers_s / n * 1e6


VERBOSE = False


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


def floor(n: int, repeat: int) -> None:
    """Print the flow process's per-call cost of a map's promised objects, step by step (median of ``repeat``)."""
    ids = os.urandom(16 * n).hex()
    calls: list[TaskCall[None]] = []
    frame = bytearray()

    def make_calls() -> None:
        calls[:] = [
            TaskCall(noop_task, {"x": i}, TaskRunInfo(ids[32 * i : 32 * i + 32], f"noop-{i}", "noop", frozenset(), i))
            for i in range(n)
        ]

    futures: list[TaskFuture[None]] = []

    def make_futures() -> None:
        futures[:] = [TaskFuture(c.task_run.id, c.task_run.name) for c in calls]

    def pack() -> None:
        for start in range(0, n, 1024):
            pack_calls(calls[start : start + 1024])

    read, write = os.pipe()
    write_frame(write, encode_state(Completed(None, start_time=Completed(None).timestamp)))
    frame += os.read(read, 1 << 16)
    for fd in (read, write):
        os.close(fd)
    page = bytes(frame) * n  # a worker's pages, as the flow process takes them

    def decode_and_set() -> None:
        for future, payload in zip(futures, frames_in(page), strict=True):
            future._set_state(decode_state(payload))

    total = 0.0
    for what, step in (
        ("run identity, parameters and call", make_calls),
        ("future", make_futures),
        ("its row in a packed batch of 1,024", pack),
        ("State decoded from its page and set on its future", decode_and_set),
    ):
        times = []
        for _ in range(repeat):
            make_futures()  # each pass sets fresh futures
            gc.collect()
            with collector_paused(n):  # as the runner and the dispatcher make them
                cpu = time.process_time()
                step()
                times.append(time.process_time() - cpu)
        per_call = statistics.median(times) / n * 1e6
        total += per_call
        print(f"  {per_call:5.2f} µs/call  {what}  (min {min(times) / n * 1e6:.2f})")
    print(f"floor: {total:.2f} µs of flow-process CPU per call (load average {os.getloadavg()[0]:.1f})")


def _report(side: str, wall: float, flow_cpu: float, workers_cpu: float) -> None:
    print(
        f"{side}: {wall:.2f} µs/task wall, CPU {flow_cpu:.2f} µs/task in the flow process, "
        f"{workers_cpu:.2f} in the workers (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("raw", "taskyard", "both", "floor"))
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9, help="maps per measurement (median taken)")
    parser.add_argument("--rounds", type=int, default=1, help="with both: raw, taskyard pairs to run")
    parser.add_argument("--verbose", action="store_true", help="print every map's figures")
    args = parser.parse_args()
    VERBOSE = args.verbose
    if args.side == "floor":
        floor(args.size, args.repeat)
        sys.exit()
    walls: dict[str, list[float]] = {"raw": [], "taskyard": []}
    sides = ["raw", "taskyard"] if args.side == "both" else [args.side]
    for _ in range(args.rounds if args.side == "both" else 1):
        for side in sides:
            wall, flow_cpu, workers_cpu = (raw if side == "raw" else taskyard)(args.size, args.repeat)
            walls[side].append(wall)
            _report(side, wall, flow_cpu, workers_cpu)
    if args.side == "both":
        ratio = statistics.median(walls["taskyard"]) / statistics.median(walls["raw"])
        print(f"taskyard / raw, wall: {ratio:.1f}x (target: 2x or less)")
