"""Run workloads on runners and on their raw backends: warm-up, repetitions, checks.

::

    for each runner:            open_target(name)  ── pools / cluster started once, outside timing
      for each workload:        data = prepare(size)  (outside timing)
        raw:       1 warm-up + R timed runs of workload.raw(backend)        ─┐ every result
        taskyard:  1 warm-up + R timed runs, each in a fresh flow run:       │ checked; a wrong
                   timing="body"  → timed inside the flow body, from the     │ one is an error
                                    first submit to the last result, after   │
                                    a warm-up map that starts the workers    │
                   timing="flows" → timed around the flow calls themselves  ─┘
        → one BenchResult: median/min/max, tasks/s, ratio to raw, peak RSS

Each flow run starts its own copy of the runner (that is the flow contract),
so per-task figures are timed inside the body, as PEERS.md measures; the
whole flow call (runner start and shutdown included) is kept as ``flow_median_s``.

The flow runs are recorded, as a user's are (recording is part of what a
task run costs), but into a scratch ``TASKYARD_HOME`` that is deleted at the
end: a benchmark must not fill the user's run history with thousands of runs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from taskyard import flow
from taskyard.bench.functions import noop_task
from taskyard.bench.memory import PeakRSS
from taskyard.bench.targets import SkipTarget, Target, open_target
from taskyard.bench.workloads import Workload
from taskyard.flows import task_runner_override

__all__ = ("BenchResult", "BenchRun", "Listener", "run_benchmarks")


@dataclass
class BenchResult:
    """One (workload, runner) row. Times are in seconds; None where not measured."""

    workload: str
    runner: str
    size: int | None
    repeat: int
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    tasks_per_s: float | None = None
    raw_median_s: float | None = None
    raw_min_s: float | None = None
    raw_max_s: float | None = None
    ratio_to_raw: float | None = None
    peak_rss_mb: float | None = None
    raw_peak_rss_mb: float | None = None
    flow_median_s: float | None = None
    tasks: int | None = None
    timing: str = "body"
    error: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)


@dataclass
class BenchRun:
    """Everything one ``run_benchmarks`` call produced."""

    results: list[BenchResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[BenchResult]:
        """The rows that ended in an error."""
        return [r for r in self.results if r.error]


class Listener:
    """Hooks for progress display; the default does nothing."""

    def begin(self, total: int) -> None:
        """``total`` timed or warm-up runs are about to happen."""

    def step(self, label: str, count: int = 1) -> None:
        """``count`` runs finished; ``label`` says what runs next."""

    def result(self, row: BenchResult) -> None:
        """A row is complete."""

    def note(self, text: str) -> None:
        """Something the user should know (a skipped runner)."""


def run_benchmarks(
    runners: Sequence[str],
    workloads: Sequence[Workload],
    *,
    size: int | None = None,
    repeat: int = 3,
    listener: Listener | None = None,
) -> BenchRun:
    """Run every workload on every runner and on its raw backend.

    Args:
        runners: Registry names; one whose plugin is missing is skipped with a note.
        workloads: What to run (see :data:`taskyard.bench.WORKLOADS`).
        size: Overrides every workload's default size.
        repeat: Timed repetitions after one warm-up run.
        listener: Receives progress; see :class:`Listener`.

    Returns:
        The rows, one per (workload, runner) that ran, and the notes.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    listener = listener or Listener()
    out = BenchRun()
    per_workload = 2 * (repeat + 1)
    listener.begin(len(runners) * len(workloads) * per_workload)
    with _scratch_home():
        _run_all(runners, workloads, size, repeat, listener, out, per_workload)
    return out


@contextlib.contextmanager
def _scratch_home() -> Iterator[None]:
    """Point TASKYARD_HOME at a throwaway folder (inherited by the workers the runners start)."""
    before = os.environ.get("TASKYARD_HOME")
    home = tempfile.mkdtemp(prefix="taskyard-bench-home-")
    os.environ["TASKYARD_HOME"] = home
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TASKYARD_HOME", None)
        else:
            os.environ["TASKYARD_HOME"] = before
        shutil.rmtree(home, ignore_errors=True)


def _run_all(
    runners: Sequence[str],
    workloads: Sequence[Workload],
    size: int | None,
    repeat: int,
    listener: Listener,
    out: BenchRun,
    per_workload: int,
) -> None:
    for name in runners:
        try:
            with open_target(name) as target:
                if target.note:
                    out.notes.append(f"{name}: {target.note}")
                raws: _RawMemo = {}
                for workload in workloads:
                    row = _bench_one(target, workload, size, repeat, listener, raws)
                    out.results.append(row)
                    listener.result(row)
        except SkipTarget as exc:
            out.notes.append(f"{name}: skipped — {exc}")
            listener.note(f"skipped runner {name!r}: {exc}")
            listener.step(f"skipped {name}", len(workloads) * per_workload)


# Raw timings already taken on a target, by (raw function, size): workloads that
# differ only on the taskyard side (tiny-map, tiny-map-unbatched) share one baseline.
_RawMemo = dict[tuple[Any, int], tuple[float, float, float, float | None]]


def _bench_one(
    target: Target, workload: Workload, size: int | None, repeat: int, listener: Listener, raws: _RawMemo | None = None
) -> BenchResult:
    size = size if size is not None else workload.default_size
    n = size or 0
    row = BenchResult(workload.name, target.name, size, repeat, timing=workload.timing)
    row.tasks = workload.tasks(n) if workload.tasks else None
    data = workload.prepare(n)
    try:
        _measure_raw(row, target, workload, n, data, listener, {} if raws is None else raws)
        _measure_taskyard(row, target, workload, n, data, listener)
    except Exception as exc:  # a wrong result or a failed run: reported, never fatal
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        del data
        gc.collect()
    if row.median_s and row.raw_median_s:
        row.ratio_to_raw = row.median_s / row.raw_median_s
    if row.median_s and row.tasks:
        row.tasks_per_s = row.tasks / row.median_s
    return row


def _measure_raw(
    row: BenchResult, target: Target, workload: Workload, n: int, data: Any, listener: Listener, raws: _RawMemo
) -> None:
    label = f"{workload.name} on raw {target.name}"
    if target.raw is None or workload.raw is None:
        listener.step(label, row.repeat + 1)
        return
    raw, run = target.raw, workload.raw
    known = raws.get((run, n))
    if known is not None:
        row.raw_median_s, row.raw_min_s, row.raw_max_s, row.raw_peak_rss_mb = known
        listener.step(f"{label}: measured already", row.repeat + 1)
        return

    def once() -> float:
        start = time.perf_counter()
        value = run(raw, n, data)
        elapsed = time.perf_counter() - start
        _check(workload, value, n, data, "raw")
        return elapsed

    with PeakRSS() as peak:
        times = _repeat(once, row.repeat, label, listener)
    row.raw_median_s, row.raw_min_s, row.raw_max_s = _stats(times)
    row.raw_peak_rss_mb = peak.mb
    raws[(run, n)] = (row.raw_median_s, row.raw_min_s, row.raw_max_s, row.raw_peak_rss_mb)


def _measure_taskyard(
    row: BenchResult, target: Target, workload: Workload, n: int, data: Any, listener: Listener
) -> None:
    label = f"{workload.name} on {target.name}"
    walls: list[float] = []
    body_flow = _body_flow(workload, n, data, target.workers) if workload.timing == "body" else None

    def once() -> float:
        with task_runner_override(target.spec):
            start = time.perf_counter()
            if body_flow is not None:
                elapsed, value = body_flow()
            else:
                value = workload.in_flow(n, data)
                elapsed = time.perf_counter() - start
            walls.append(time.perf_counter() - start)
        _check(workload, value, n, data, "taskyard")
        return elapsed  # type: ignore[no-any-return]

    with PeakRSS() as peak:
        times = _repeat(once, row.repeat, label, listener)
    row.median_s, row.min_s, row.max_s = _stats(times)
    row.flow_median_s = statistics.median(walls[1:])
    row.peak_rss_mb = peak.mb


def _body_flow(workload: Workload, n: int, data: Any, workers: int) -> Callable[[], Any]:
    """A flow that starts the runner's workers, then times ``workload.in_flow`` inside its body."""

    @flow(name=f"bench-{workload.name}", validate_parameters=False)
    def bench_flow() -> tuple[float, Any]:
        noop_task.map(range(2 * workers)).result()  # workers up, code imported: not timed
        start = time.perf_counter()
        value = workload.in_flow(n, data)
        return time.perf_counter() - start, value

    return bench_flow


def _repeat(once: Callable[[], float], repeat: int, label: str, listener: Listener) -> list[float]:
    listener.step(f"{label}: warm-up", 0)
    once()  # warm-up: imports, caches, pools; discarded
    times = []
    for i in range(repeat):
        listener.step(f"{label}: run {i + 1}/{repeat}")
        times.append(once())
    listener.step(f"{label}: done")
    return times


def _check(workload: Workload, value: Any, n: int, data: Any, side: str) -> None:
    try:
        workload.check(value, n, data)
    except AssertionError as exc:
        raise type(exc)(f"{side} result of {workload.name!r} is wrong: {exc}") from None


def _stats(times: list[float]) -> tuple[float, float, float]:
    return statistics.median(times), min(times), max(times)
