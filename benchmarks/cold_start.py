"""Cold start: `import taskyard` and the first flow run, each in a fresh interpreter.

Usage::

    python3 benchmarks/cold_start.py [--runs 7] [--json benchmarks/cold-start-2cpu.json]

Each figure is the median over fresh `python3 -c` processes, timed inside the
process (interpreter start-up excluded, as PEERS.md measures Prefect's
0.7-1.0 s import and 5.8-7.4 s first flow). It also checks that importing
taskyard loads none of dask, distributed, ray, rich or click.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPORT = """
import time
t = time.perf_counter()
import taskyard
elapsed = time.perf_counter() - t
import sys
heavy = sorted(m for m in ("dask", "distributed", "ray", "rich", "click") if m in sys.modules)
print(elapsed, ",".join(heavy))
"""

FIRST_FLOW = """
import time
t = time.perf_counter()
from taskyard import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow
def first(n: int) -> list[int]:
    return double.map(range(n)).result()

assert first(10) == [2 * i for i in range(10)]
print(time.perf_counter() - t, "")
"""


def _measure(code: str, runs: int) -> tuple[list[float], str]:
    times, heavy = [], ""
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else heavy
    return times, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    import_times, heavy = _measure(IMPORT, args.runs)
    flow_times, _ = _measure(FIRST_FLOW, args.runs)
    result = {
        "runs": args.runs,
        "import_taskyard_median_s": statistics.median(import_times),
        "import_taskyard_min_s": min(import_times),
        "first_flow_median_s": statistics.median(flow_times),
        "first_flow_min_s": min(flow_times),
        "heavy_modules_imported": heavy.split(",") if heavy else [],
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
