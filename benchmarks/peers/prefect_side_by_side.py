"""Run noop-map, chain and cpu-map on Prefect 3.9.1 beside taskyard, per runner, and write JSON.

Runners (``--runners``, default ``threads,dask,ray``):

* ``threads`` — Prefect's ``ThreadPoolTaskRunner`` vs taskyard's ``threads``;
* ``dask`` — ``prefect_dask.DaskTaskRunner`` vs ``taskyard_dask.DaskTaskRunner``,
  each on its own ``distributed.LocalCluster`` (2 processes x 1 thread, on
  127.0.0.1), started before timing;
* ``ray`` — ``prefect_ray.RayTaskRunner`` vs ``taskyard_ray.RayTaskRunner``,
  each on its own local Ray (2 CPUs, 200 MB of object store, no dashboard,
  on 127.0.0.1), started before timing; both runners find Ray initialised
  and use it. Skipped, with the reason, when ``ray``, taskyard-ray or
  prefect-ray is missing.

Prefect is never a taskyard dependency: it is installed, only when asked
(``--install``), into its own virtualenv, following the recipe in
PEERS.md (the 3.9.1 wheel with ``--no-deps``, its ``Requires-Dist`` minus
``certifi``, then prefect itself with ``--no-deps``; then prefect-dask with
``--no-deps`` plus ``distributed`` at the version taskyard's side has, so
prefect is never upgraded; likewise prefect-ray with ``--no-deps`` plus
``ray`` at taskyard's version). Each Prefect repetition runs in a fresh process
with its own temporary API server (``PREFECT_HOME`` in a temp folder, no
``PREFECT_API_URL``) and, for ``dask``, its own LocalCluster; one warm-up
flow starts the server (and the Dask workers), then the workload is timed
inside the flow body, after an untimed warm-up map of 2 x workers no-ops,
from the first submit/map to the last result — the same region
``taskyard bench`` times. taskyard runs in this interpreter through
``taskyard.bench`` (one warm-up run, then ``--repeat`` runs, for each side).

Usage::

    python benchmarks/peers/prefect_side_by_side.py --install            # venv in /tmp/taskyard-prefect-venv
    python benchmarks/peers/prefect_side_by_side.py --out benchmarks/peers/prefect-2cpu.json
    python benchmarks/peers/prefect_side_by_side.py --runners dask --dask-noop 200 --repeat 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from importlib import metadata
from pathlib import Path

PREFECT_VERSION = "3.9.1"
PREFECT_DASK_VERSION = "0.3.7"
PREFECT_RAY_VERSION = "0.6.0"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "taskyard-prefect-venv"
WORKLOADS = ("noop-map", "chain", "cpu-map")
RUNNERS = ("threads", "dask", "ray")
DASK_WORKERS = 2  # LocalCluster(n_workers=2, threads_per_worker=1, processes=True) on both sides
RAY_CPUS = 2  # a local Ray with num_cpus=2 on both sides

# Runs inside the Prefect virtualenv: argv = runner, workload, size, cpu_loops. Prints one JSON line.
PREFECT_SCRIPT = r"""
import json, sys, time
from prefect import flow, task, unmapped

runner, workload, size, loops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

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

def main():
    cluster = None
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner
        make_runner, workers, backend = ThreadPoolTaskRunner, 2, "ThreadPoolTaskRunner"
    elif runner == "dask":
        from distributed import LocalCluster
        from prefect_dask import DaskTaskRunner
        workers = int(sys.argv[5])
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0")
        cluster_start = time.perf_counter() - t0
        make_runner = lambda: DaskTaskRunner(address=cluster.scheduler_address)
        backend = "prefect_dask.DaskTaskRunner"
    elif runner == "ray":
        import ray
        from ray._private import ray_constants
        from prefect_ray import RayTaskRunner
        workers = int(sys.argv[5])
        ray_constants.ENABLE_RAY_CLUSTER = False  # keep every socket on 127.0.0.1, as taskyard's runner does
        t0 = time.perf_counter()
        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=workers, include_dashboard=False,
                 object_store_memory=200 * 1024 * 1024)
        cluster_start = time.perf_counter() - t0
        cluster = ray
        make_runner = RayTaskRunner  # finds Ray initialised: uses it
        backend = "prefect_ray.RayTaskRunner"
    else:
        raise SystemExit(f"unknown runner {runner!r}")

    @flow(task_runner=make_runner())
    def bench(n):
        noop.map(range(2 * workers)).result()  # workers up, code imported: not timed
        start = time.perf_counter()
        ok = RUN(n)
        return time.perf_counter() - start, ok

    try:
        t0 = time.perf_counter()
        bench(2)  # warm-up flow: starts the temporary API server (and the workers' own); not timed
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        elapsed, ok = bench(size)
        whole = time.perf_counter() - t0
    finally:
        if cluster is not None:
            cluster.shutdown() if runner == "ray" else cluster.close()
    out = {"elapsed": elapsed, "ok": ok, "flow_s": whole, "warmup_flow_s": warm, "backend": backend}
    if cluster is not None:
        out["cluster_start_s"] = cluster_start
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


def venv_python(root: Path) -> Path:
    """The interpreter of the virtualenv at ``root``."""
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_prefect(root: Path) -> None:
    """Create the virtualenv at ``root``; install Prefect 3.9.1 (per PEERS.md) and prefect-dask into it."""
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
    # prefect-dask needs prefect>=3.4.7 and distributed; installed --no-deps so pip cannot move prefect.
    # distributed/dask at the versions taskyard's side has, when it has them (same backend on both sides).
    dask_reqs = ["dask[distributed]"]
    try:
        dask_reqs = [f"dask=={metadata.version('dask')}", f"distributed=={metadata.version('distributed')}"]
    except metadata.PackageNotFoundError:
        pass
    subprocess.run([*pip, "install", *dask_reqs], check=True)
    subprocess.run([*pip, "install", "--no-deps", f"prefect-dask=={PREFECT_DASK_VERSION}"], check=True)
    ray_req = "ray"
    try:
        ray_req = f"ray=={metadata.version('ray')}"
    except metadata.PackageNotFoundError:
        pass
    subprocess.run([*pip, "install", ray_req], check=True)
    subprocess.run([*pip, "install", "--no-deps", f"prefect-ray=={PREFECT_RAY_VERSION}"], check=True)
    installed = subprocess.run([*pip, "show", "prefect"], capture_output=True, text=True, check=True).stdout
    if f"Version: {PREFECT_VERSION}" not in installed:
        raise SystemExit(f"prefect is no longer {PREFECT_VERSION} in {root}:\n{installed}")


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


def _venv_versions(root: Path) -> dict[str, str | None]:
    """Versions of Prefect, its runner plugins and their backends inside the virtualenv."""
    names = ["prefect", "prefect-dask", "prefect-ray", "dask", "distributed", "ray", "pydantic", "cloudpickle"]
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run([str(venv_python(root)), "-c", code, *names], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def run_prefect(root: Path, runner: str, workload: str, size: int, repeat: int, loops: int) -> dict[str, object]:
    """Median of ``repeat`` fresh Prefect processes for one (runner, workload)."""
    times, extras = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            env = {
                **os.environ, "PREFECT_HOME": home, "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1",
            }  # fmt: skip
            env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
            env.pop("PREFECT_API_URL", None)
            env.pop("RAY_ADDRESS", None)
            argv = [str(venv_python(root)), "-c", PREFECT_SCRIPT, runner, workload, str(size), str(loops)]
            workers = RAY_CPUS if runner == "ray" else DASK_WORKERS
            proc = subprocess.run([*argv, str(workers)], env=env, capture_output=True, text=True, cwd=home)
        if proc.returncode != 0:
            raise SystemExit(f"prefect {runner} {workload} failed:\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if not out["ok"]:
            raise SystemExit(f"prefect {runner} {workload}: wrong result")
        times.append(out["elapsed"])
        extras.append(out)
    row = _row("prefect", runner, workload, size, times)
    row["backend"] = extras[0]["backend"]
    row["flow_median_s"] = statistics.median(e["flow_s"] for e in extras)
    if "cluster_start_s" in extras[0]:
        row["cluster_start_median_s"] = statistics.median(e["cluster_start_s"] for e in extras)
    row["warmup_flow_median_s"] = statistics.median(e["warmup_flow_s"] for e in extras)
    return row


def run_taskyard(runner: str, sizes: dict[str, int], repeat: int) -> list[dict[str, object]]:
    """The workloads on one taskyard runner, through ``taskyard.bench`` (one runner start for all)."""
    from taskyard.bench import WORKLOADS as TASKYARD_WORKLOADS
    from taskyard.bench import run_benchmarks

    workloads = [dataclasses.replace(TASKYARD_WORKLOADS[w], default_size=sizes[w]) for w in WORKLOADS]
    run = run_benchmarks([runner], workloads, repeat=repeat)
    skipped = [n for n in run.notes if "skipped" in n]
    if skipped:
        raise SystemExit(f"taskyard {runner}: {skipped}")
    rows = []
    for row in run.results:
        if row.error:
            raise SystemExit(f"taskyard {runner} {row.workload}: {row.error}")
        out = _row("taskyard", runner, row.workload, row.size or 0, [])
        out.update(median_s=row.median_s, min_s=row.min_s, max_s=row.max_s, repeat=row.repeat)
        out["us_per_task"] = row.median_s / (row.size or 1) * 1e6  # type: ignore[operator]
        out["backend"] = {
            "threads": "taskyard threads", "dask": "taskyard_dask.DaskTaskRunner", "ray": "taskyard_ray.RayTaskRunner",
        }.get(runner, runner)  # fmt: skip
        out["flow_median_s"], out["raw_median_s"] = row.flow_median_s, row.raw_median_s
        out["note"] = "; ".join(run.notes)
        rows.append(out)
    return rows


def ray_skip_reason(root: Path) -> str | None:
    """Why the ``ray`` pair cannot run here, or None if it could."""
    reasons = []
    from importlib.metadata import entry_points

    if "ray" not in {e.name for e in entry_points(group="taskyard.runners")}:
        reasons.append("taskyard-ray is not installed (no 'ray' in the taskyard.runners entry points)")
    try:
        metadata.version("ray")
    except metadata.PackageNotFoundError:
        reasons.append("ray is not installed beside taskyard")
    if _venv_versions(root).get("prefect-ray") is None:
        reasons.append("prefect-ray is not installed in the Prefect virtualenv (run with --install)")
    return "; ".join(reasons) or None


def _row(framework: str, runner: str, workload: str, size: int, times: list[float]) -> dict[str, object]:
    median = statistics.median(times) if times else None
    return {
        "framework": framework, "runner": runner, "workload": workload, "size": size,
        "median_s": median, "min_s": min(times, default=None), "max_s": max(times, default=None),
        "us_per_task": median / size * 1e6 if median is not None else None,
        "repeat": len(times) if times else None, "times_s": times or None,
    }  # fmt: skip


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages (the machine may be shared), or None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _parse_repeat(text: str) -> dict[str, int]:
    """``noop-map=1,cpu-map=2`` → per-workload repetitions for Prefect on dask."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in WORKLOADS:
            raise argparse.ArgumentTypeError(f"unknown workload {name!r}")
        out[name] = int(value)
    return out


def main() -> None:
    """Parse arguments, install if asked, run both sides per runner, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="Prefect's own virtualenv")
    parser.add_argument("--install", action="store_true", help="create the virtualenv and install Prefect, then exit")
    parser.add_argument("--out", type=Path, default=Path("prefect-side-by-side.json"))
    parser.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, from {','.join(RUNNERS)}")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noop", type=int, default=1000, help="threads: size of noop-map (Prefect: ~5 ms per task)")
    parser.add_argument("--chain", type=int, default=200, help="threads: links of chain")
    parser.add_argument("--cpu", type=int, default=40, help="threads: tasks of cpu-map")
    parser.add_argument("--dask-noop", type=int, default=500, help="dask: size of noop-map (prefect-dask: ~70 ms/task)")
    parser.add_argument("--dask-chain", type=int, default=100, help="dask: links of chain")
    parser.add_argument("--dask-cpu", type=int, default=40, help="dask: tasks of cpu-map")
    parser.add_argument(
        "--prefect-dask-repeat", type=_parse_repeat, default={},
        help="fewer Prefect repetitions on dask for slow workloads, e.g. noop-map=1",
    )  # fmt: skip
    parser.add_argument("--ray-noop", type=int, default=300, help="ray: size of noop-map (prefect-ray: ~85-110 ms/task)")
    parser.add_argument("--ray-chain", type=int, default=50, help="ray: links of chain")
    parser.add_argument("--ray-cpu", type=int, default=40, help="ray: tasks of cpu-map")
    parser.add_argument(
        "--prefect-ray-repeat", type=_parse_repeat, default={},
        help="fewer Prefect repetitions on ray for slow workloads, e.g. noop-map=1",
    )  # fmt: skip
    args = parser.parse_args()
    if args.install:
        install_prefect(args.venv)
        return
    runners = [r for r in args.runners.split(",") if r]
    unknown = set(runners) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown runner(s): {', '.join(sorted(unknown))}")
    if not venv_python(args.venv).exists():
        raise SystemExit(f"no Prefect virtualenv at {args.venv}; run with --install first")
    from taskyard.bench.functions import CPU_LOOPS
    from taskyard.bench.report import machine_info

    versions = _venv_versions(args.venv)
    if "dask" in runners and versions.get("prefect-dask") is None:
        raise SystemExit(f"prefect-dask is not installed in {args.venv}; run with --install")
    sizes = {
        "threads": {"noop-map": args.noop, "chain": args.chain, "cpu-map": args.cpu},
        "dask": {"noop-map": args.dask_noop, "chain": args.dask_chain, "cpu-map": args.dask_cpu},
        "ray": {"noop-map": args.ray_noop, "chain": args.ray_chain, "cpu-map": args.ray_cpu},
    }
    began, load_before = time.perf_counter(), _loadavg()
    results: list[dict[str, object]] = []
    skipped: list[dict[str, str]] = []
    for runner in runners:
        if runner == "ray":
            reason = ray_skip_reason(args.venv)
            if reason:
                skipped.append({"runner": "ray", "pair": "prefect-ray vs taskyard ray", "reason": reason})
                print(f"skipped ray: {reason}", flush=True)
                continue
        tk_rows = {r["workload"]: r for r in run_taskyard(runner, sizes[runner], args.repeat)}
        for workload in WORKLOADS:
            repeat = args.repeat
            if runner == "dask":
                repeat = args.prefect_dask_repeat.get(workload, repeat)
            if runner == "ray":
                repeat = args.prefect_ray_repeat.get(workload, repeat)
            pf = run_prefect(args.venv, runner, workload, sizes[runner][workload], repeat, CPU_LOOPS)
            tk = tk_rows[workload]
            pf["prefect_over_taskyard"] = pf["median_s"] / tk["median_s"]  # type: ignore[operator]
            results += [tk, pf]
            print(json.dumps([tk, pf]), flush=True)
    machine = machine_info()
    doc = {
        "command": " ".join(["python3", "benchmarks/peers/prefect_side_by_side.py", *sys.argv[1:]]),
        "machine": machine,
        "prefect_version": versions.get("prefect"),
        "prefect_venv_versions": versions,
        "cpu_loops": CPU_LOOPS,
        "method": (
            "median of --repeat runs per side after one warm-up; Prefect: each run a fresh process with its own "
            "temporary API server (and, for dask, its own LocalCluster 2 processes x 1 thread; for ray, its own "
            "local Ray with 2 CPUs), a warm-up flow, then timed inside the flow body after an untimed warm-up map "
            "of 2 x workers no-ops; taskyard: taskyard.bench, timed the same way inside the flow body (one "
            "LocalCluster for all its dask runs, one local Ray for all its ray runs). "
            "Cluster start, imports and API server start excluded."
        ),
        "results": results,
        "skipped": skipped,
        "total_run_s": time.perf_counter() - began,
        "loadavg_before_after": [load_before, _loadavg()],
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out} ({doc['total_run_s']:.0f} s)")


if __name__ == "__main__":
    main()
