"""Print a recorded ``taskyard bench --json`` file as a Markdown table (for README and docs).

Usage: ``python3 benchmarks/summarize.py benchmarks/results-2cpu.json``
"""

from __future__ import annotations

import json
import sys


def fmt(seconds: float | None) -> str:
    """Seconds in the unit that reads best."""
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def main(path: str) -> None:
    """Print the table of the file at ``path``."""
    with open(path) as f:
        doc = json.load(f)
    print("| workload | runner | N | median | µs/task | raw median | ×raw | whole flow | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in doc["results"]:
        if r.get("error"):
            print(f"| {r['workload']} | {r['runner']} | {r['size']} | ERROR: {r['error']} | | | | | |")
            continue
        per_task = f"{r['median_s'] / r['tasks'] * 1e6:,.1f}" if r.get("tasks") else "–"
        ratio = f"{r['ratio_to_raw']:.2f}" if r.get("ratio_to_raw") else "–"
        print(
            f"| {r['workload']} | {r['runner']} | {r['size']:,} | {fmt(r['median_s'])} | {per_task} | "
            f"{fmt(r['raw_median_s'])} | {ratio} | {fmt(r['flow_median_s'])} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
