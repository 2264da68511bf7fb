"""What the console logging and the live progress display cost a 10,000-task no-op map on threads.

Run it on a terminal (the display needs one), e.g.::

    script -qc "python benchmarks/progress_overhead.py --repeat 7" /dev/null

It alternates flow runs with the display off (``TASKYARD_PROGRESS=0``) and on
(shown at once: ``TASKYARD_PROGRESS_DELAY=0``), with the console logging on in
both, and prints the median and min–max of each, timed from the first map call
to the last result inside the flow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from taskyard import flow, task


@task
def noop(x: int) -> int:
    return x


@flow
def timed_map(n: int) -> float:
    start = time.perf_counter()
    noop.map(range(n)).result()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not sys.stdout.isatty():
        sys.exit("stdout is not a terminal, so the display would stay off; run this under `script` or in a terminal")
    os.environ["TASKYARD_PROGRESS_DELAY"] = "0"
    times: dict[str, list[float]] = {"display off": [], "display on": []}
    timed_map(args.size)  # warm-up
    for _ in range(args.repeat):
        for label, flag in (("display off", "0"), ("display on", "1")):
            os.environ["TASKYARD_PROGRESS"] = flag
            times[label].append(timed_map(args.size))
    for label, values in times.items():
        print(
            f"{label:<12} median {statistics.median(values):.3f} s  min {min(values):.3f}  max {max(values):.3f}"
            f"  ({statistics.median(values) / args.size * 1e6:.1f} us/task, {args.repeat} runs, N={args.size:,})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
