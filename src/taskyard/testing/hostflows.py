"""The flows of the multi-host checks, run as a program on the flow host.

``python -m taskyard.testing.hostflows WORKLOAD --runner NAME --runner-kwargs JSON``
runs one workload with the named runner (connected to a cluster on other
simulated hosts) and prints one JSON report on stdout: how long it took,
the flow process's peak RSS, the flow run's final state, and the final
state of every task run as the run store recorded it. It runs inside the
flow host's network namespace (``ip netns exec``), so the bytes it moves
are the bytes through that host's interface.

Workloads:

* ``chain``: ``--size`` dependent tasks, each returning ``--nbytes`` fresh
  bytes; a last task returns a digest (a few bytes) to the flow.
* ``mapreduce``: a map of ``--size`` tasks, each returning ``--nbytes``,
  feeding one reduce that returns their total length.
* ``scale``: a map of ``--size`` tiny tasks; the flow sums the results.
* ``slowmap``: a map of ``--size`` tasks that each sleep ``--seconds``,
  with ``--retries``; each attempt first writes a file into ``--marks``
  (``<index>-<pid>``) so a test knows the map is under way and where.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import resource
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from taskyard import flow, get_run_context, task

__all__ = ("main",)


@task
def blob(previous: Any, nbytes: int) -> bytes:
    """Fresh, incompressible bytes (seeded by the previous link of a chain)."""
    seed = hashlib.sha256(previous[:64] if previous else b"start").digest()
    return seed + os.urandom(nbytes - len(seed))


@task
def digest(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@task
def total_length(blobs: Any) -> int:
    return sum(len(b) for b in blobs)


@task
def square(x: int) -> int:
    return x * x


@task
def mark_and_sleep(x: int, marks: str, seconds: float) -> int:
    attempt = get_run_context().task_run
    run_count = attempt.run_count if attempt is not None else 0
    Path(marks, f"{x}-{os.getpid()}-{run_count}").touch()
    time.sleep(seconds)
    return x


@flow
def chain(size: int, nbytes: int) -> str:
    link = blob.submit(None, nbytes)
    for _ in range(size - 1):
        link = blob.submit(link, nbytes)
    return digest.submit(link).result()


@flow
def mapreduce(size: int, nbytes: int) -> int:
    parts = blob.map([None] * size, nbytes)
    return total_length.submit(parts).result()


@flow
def scale(size: int) -> int:
    return sum(square.map(range(size)).result())


@flow
def slowmap(size: int, marks: str, seconds: float, retries: int) -> int:
    futures = mark_and_sleep.with_options(retries=retries).map(range(size), marks, seconds)
    return sum(f.result() for f in futures)


def _runner(name: str, kwargs: dict[str, Any]) -> Any:
    from taskyard.runners.registry import registry

    return registry.get(name)(**kwargs)


def _report(state: Any, started: float) -> dict[str, Any]:
    from taskyard.runs import list_flow_runs, read_flow_run

    seconds = time.perf_counter() - started
    runs = list_flow_runs(limit=1)
    tasks: Counter[str] = Counter()
    run_counts: Counter[int] = Counter()
    if runs:
        for tr in read_flow_run(runs[0].id).task_runs:
            tasks[f"{tr.state.type.value}/{tr.state.name}"] += 1
            run_counts[tr.run_count] += 1
    return {
        "flow_state": state.type.value,
        "flow_state_name": state.name,
        "message": state.message,
        "recorded_flow_state": runs[0].state.type.value if runs else None,
        "result": state.result(raise_on_failure=False) if state.is_completed() else None,
        "seconds": round(seconds, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "task_states": dict(tasks),
        "run_counts": {str(k): v for k, v in run_counts.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run one workload and print its JSON report (see the module's doc)."""
    parser = argparse.ArgumentParser(prog="python -m taskyard.testing.hostflows")
    parser.add_argument("workload", choices=("chain", "mapreduce", "scale", "slowmap"))
    parser.add_argument("--runner", required=True)
    parser.add_argument("--runner-kwargs", default="{}", type=json.loads)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--nbytes", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--marks", default="")
    parser.add_argument("--stacks", default="", help="on SIGUSR1, write every thread's stack to this file")
    args = parser.parse_args(argv)
    if args.stacks:  # a test that finds the flow still running asks it where it waits
        faulthandler.register(signal.SIGUSR1, file=open(args.stacks, "w"), all_threads=True)  # noqa: SIM115
    runner = _runner(args.runner, args.runner_kwargs)
    the_flow: Any
    params: dict[str, Any]
    if args.workload == "chain":
        the_flow, params = chain, {"size": args.size, "nbytes": args.nbytes}
    elif args.workload == "mapreduce":
        the_flow, params = mapreduce, {"size": args.size, "nbytes": args.nbytes}
    elif args.workload == "scale":
        the_flow, params = scale, {"size": args.size}
    else:
        the_flow = slowmap
        params = {"size": args.size, "marks": args.marks, "seconds": args.seconds, "retries": args.retries}
    started = time.perf_counter()
    state = the_flow.with_options(task_runner=runner)(**params, return_state=True)
    print(json.dumps(_report(state, started)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
