"""A 10,000-task no-op map on ``threads`` beside a bare ``ThreadPoolExecutor``, in wall and CPU time.

Alternates the two inside one flow run (same worker count, both warmed up)
and prints the medians of ``--repeat`` rounds. CPU time (``process_time``,
all threads) is steadier than wall time on a shared machine::

    python benchmarks/threads_cpu.py --repeat 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from taskyard import flow, task
from taskyard.runners import ThreadPoolTaskRunner

N = 10_000
WORKERS = min(32, (os.cpu_count() or 1) + 4)


def noop(x: int) -> int:
    return x


noop_task = task(name="noop")(noop)


def _raw(pool: ThreadPoolExecutor) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    futures = [pool.submit(noop, i) for i in range(N)]
    [f.result() for f in futures]
    return time.process_time() - cpu, time.perf_counter() - wall


@flow(task_runner=ThreadPoolTaskRunner(max_workers=WORKERS))
def rounds(repeat: int) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    noop_task.map(range(100)).result()
    out = []
    with ThreadPoolExecutor(WORKERS) as pool:
        _raw(pool)
        for _ in range(repeat):
            raw = _raw(pool)
            cpu, wall = time.process_time(), time.perf_counter()
            noop_task.map(range(N)).result()
            out.append((raw, (time.process_time() - cpu, time.perf_counter() - wall)))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    runs = rounds(parser.parse_args().repeat)
    raw_cpu, raw_wall = (statistics.median(r[0][i] for r in runs) for i in (0, 1))
    ty_cpu, ty_wall = (statistics.median(r[1][i] for r in runs) for i in (0, 1))
    print(
        f"ThreadPoolExecutor: cpu {raw_cpu * 1e3:.0f} ms, wall {raw_wall * 1e3:.0f} ms | threads runner: cpu "
        f"{ty_cpu * 1e3:.0f} ms, wall {ty_wall * 1e3:.0f} ms | ratio cpu {ty_cpu / raw_cpu:.2f}, wall {ty_wall / raw_wall:.2f}"
    )
