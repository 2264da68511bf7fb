"""``taskyard bench``: the same workloads on every runner and on the raw backend beneath it.

Modules, each with one job:

* :mod:`~taskyard.bench.functions` — the plain functions the workloads run, and their tasks;
* :mod:`~taskyard.bench.workloads` — the workloads: taskyard version, raw version, expected result;
* :mod:`~taskyard.bench.baselines` — raw backends (loop, thread pool, process pool, Dask, Ray);
* :mod:`~taskyard.bench.targets` — a runner name → its taskyard runner plus its raw backend;
* :mod:`~taskyard.bench.memory` — peak RSS of this process and its children;
* :mod:`~taskyard.bench.harness` — warm-up, repetitions, timing, checking;
* :mod:`~taskyard.bench.report` — machine description and JSON;
* :mod:`~taskyard.bench.plot` — the PNG charts (matplotlib, optional).

``import taskyard`` never imports this package.
"""

from taskyard.bench.harness import BenchResult, run_benchmarks
from taskyard.bench.workloads import WORKLOADS, Workload, WrongResultError, flow_workload

__all__ = ("BenchResult", "run_benchmarks", "WORKLOADS", "Workload", "WrongResultError", "flow_workload")
