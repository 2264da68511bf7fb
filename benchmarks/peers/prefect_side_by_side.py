"""Run noop-map, chain and cpu-map on Prefect 3.9.1 beside taskyard, and write JSON.

Prefect is never a taskyard dependency: it is installed, only when asked
(``--install``), into its own virtualenv, following the recipe in
PEERS.md (the 3.9.1 wheel with ``--no-deps``, its ``Requires-Dist`` minus
``certifi``, then prefect itself with ``--no-deps``). Each Prefect
repetition runs in a fresh process with its own temporary API server
(``PREFECT_HOME`` in a temp folder, no ``PREFECT_API_URL``); one warm-up flow
starts the server, then the workload is timed inside the flow body, from
the first submit/map to the last result — the same region ``taskyard bench``
times. taskyard runs in this interpreter through ``taskyard.bench``.

Usage::

    python benchmarks/peers/prefect_side_by_side.py --install            # venv in /tmp/taskyard-prefect-venv
    python benchmarks/peers/prefect_side_by_side.py --out benchmarks/peers/prefect-2cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import venv
import zipfile
from pathlib import Path

PREFECT_VERSION = "3.9.1"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "taskyard-prefect-venv"
WORKLOADS = ("noop-map", "chain", "cpu-map")

# Runs inside the Prefect virtualenv: argv = workload, size, cpu_loops. Prints one JSON line.
PREFECT_SCRIPT = r"""
import json, sys, time
from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

workload, size, loops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

@task
def noop(x):
    return x

@task
def inc(x):
    return x + 1

@task
def spin(k, loops):
    acc = 0
    for i in range(loops):
        acc += i
    return k + acc

def run_noop(n):
    return noop.map(range(n)).result() == list(range(n))

def run_chain(n):
    future = inc.submit(0)
    for _ in range(n - 1):
        future = inc.submit(future)
    return future.result() == n

def run_cpu(n):
    want = [k + loops * (loops - 1) // 2 for k in range(n)]
    return spin.map(range(n), unmapped(loops)).result() == want

RUN = {"noop-map": run_noop, "chain": run_chain, "cpu-map": run_cpu}[workload]

@flow(task_runner=ThreadPoolTaskRunner())
def bench(n):
    start = time.perf_counter()
    ok = RUN(n)
    return time.perf_counter() - start, ok

bench(2)  # warm-up: starts the temporary API server; not timed
elapsed, ok = bench(size)
print(json.dumps({"elapsed": elapsed, "ok": ok}))
"""


def venv_python(root: Path) -> Path:
    """The interpreter of the virtualenv at ``root``."""
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_prefect(root: Path) -> None:
    """Create the virtualenv at ``root`` and install Prefect 3.9.1 into it per PEERS.md."""
    if not venv_python(root).exists():
        venv.create(root, with_pip=True)
    py = str(venv_python(root))
    wheels = root / "wheels"
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "download", f"prefect=={PREFECT_VERSION}", "--no-deps", "-d", str(wheels)], check=True)
    wheel = next(wheels.glob(f"prefect-{PREFECT_VERSION}-*.whl"))
    requirements = _requires_dist(wheel)
    subprocess.run([*pip, "install", *requirements], check=True)
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True)


def _requires_dist(wheel: Path) -> list[str]:
    """The wheel's unconditional ``Requires-Dist`` lines, without certifi (see PEERS.md)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req or req.lower().startswith("certifi"):
            continue
        reqs.append(req)
    return reqs


def run_prefect(root: Path, workload: str, size: int, repeat: int, loops: int) -> dict[str, object]:
    """Median of ``repeat`` fresh Prefect processes for one workload."""
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "PREFECT_HOME": home, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            env.pop("PREFECT_API_URL", None)
            proc = subprocess.run(
                [str(venv_python(root)), "-c", PREFECT_SCRIPT, workload, str(size), str(loops)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if not out["ok"]:
            raise SystemExit(f"prefect {workload}: wrong result")
        times.append(out["elapsed"])
    return _row("prefect", workload, size, times)


def run_taskyard(workload: str, size: int, repeat: int) -> dict[str, object]:
    """The same workload on taskyard's thread runner, through ``taskyard.bench``."""
    from taskyard.bench import WORKLOADS as TASKYARD_WORKLOADS
    from taskyard.bench import run_benchmarks

    (row,) = run_benchmarks(["threads"], [TASKYARD_WORKLOADS[workload]], size=size, repeat=repeat).results
    if row.error:
        raise SystemExit(f"taskyard {workload}: {row.error}")
    out = _row("taskyard", workload, size, [row.median_s, row.min_s, row.max_s])  # type: ignore[list-item]
    out["median_s"], out["raw_median_s"] = row.median_s, row.raw_median_s
    return out


def _row(framework: str, workload: str, size: int, times: list[float]) -> dict[str, object]:
    median = statistics.median(times)
    return {
        "framework": framework, "runner": "threads", "workload": workload, "size": size,
        "median_s": median, "min_s": min(times), "max_s": max(times), "us_per_task": median / size * 1e6,
    }  # fmt: skip


def main() -> None:
    """Parse arguments, install if asked, run both sides, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Prefect's own virtualenv")
    parser.add_argument("--install", action="store_true", help="create the virtualenv and install Prefect, then exit")
    parser.add_argument("--out", type=Path, default=Path("prefect-side-by-side.json"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noop", type=int, default=1000, help="size of noop-map (Prefect: ~5 ms per task)")
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=40)
    args = parser.parse_args()
    if args.install:
        install_prefect(args.venv)
        return
    if not venv_python(args.venv).exists():
        raise SystemExit(f"no Prefect virtualenv at {args.venv}; run with --install first")
    from taskyard.bench.functions import CPU_LOOPS
    from taskyard.bench.report import machine_info

    sizes = {"noop-map": args.noop, "chain": args.chain, "cpu-map": args.cpu}
    results = []
    for workload in WORKLOADS:
        results.append(run_taskyard(workload, sizes[workload], args.repeat))
        results.append(run_prefect(args.venv, workload, sizes[workload], args.repeat, CPU_LOOPS))
        print(json.dumps(results[-2:]), flush=True)
    doc = {"machine": machine_info(), "prefect_version": PREFECT_VERSION, "results": results}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
