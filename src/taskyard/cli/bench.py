"""``taskyard bench``: time the workloads on the runners and on their raw backends.

The command parses names, runs :func:`taskyard.bench.run_benchmarks` with a
rich progress bar, prints the table and writes ``--json`` / ``--plot``.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from taskyard.bench.harness import BenchResult, Listener
from taskyard.cli.errors import UserError

__all__ = ("bench", "UnknownNameError", "BenchFailed")


class UnknownNameError(UserError):
    """An unknown runner or workload name; the message lists the valid ones."""


class BenchFailed(click.ClickException):
    """A workload failed or returned a wrong result; exit code 1."""

    exit_code = 1


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _runners(text: str | None) -> list[str]:
    from taskyard.bench.targets import runner_names

    valid = runner_names()
    names = _split(text) or valid
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UnknownNameError(f"unknown runner {unknown[0]!r}; valid runners: {', '.join(valid)}")
    return names


def _workloads(text: str | None) -> list[Any]:
    from taskyard.bench.workloads import WORKLOADS, flow_workload

    chosen = []
    for name in _split(text) or list(WORKLOADS):
        if name in WORKLOADS:
            chosen.append(WORKLOADS[name])
        elif ":" in name:
            try:
                chosen.append(flow_workload(name))
            except (ValueError, LookupError, TypeError, ImportError) as exc:
                raise UserError(f"workload {name!r}: {exc}") from None
        else:
            raise UnknownNameError(
                f"unknown workload {name!r}; valid workloads: {', '.join(WORKLOADS)}, or FILE.py:FLOW"
            )
    return chosen


@click.command()
@click.option("--runners", "runners_text", metavar="A,B", help="Runners to compare (default: every known runner).")
@click.option(
    "--workloads", "workloads_text", metavar="A,B", help="Workloads, or FILE.py:FLOW (default: all built-in)."
)
@click.option("--size", type=click.IntRange(min=1), help="N for every workload (default: each workload's own).")
@click.option(
    "--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs after one warm-up."
)
@click.option("--json", "json_path", metavar="FILE", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option(
    "--plot", "plot_path", metavar="FILE.png", type=click.Path(dir_okay=False), help="Draw charts (needs matplotlib)."
)
def bench(
    runners_text: str | None,
    workloads_text: str | None,
    size: int | None,
    repeat: int,
    json_path: str | None,
    plot_path: str | None,
) -> None:
    """Benchmark task runners against each other and against their raw backends.

    Workloads: noop-map, chain, fan-in, cpu-map, large-arg, many-flows,
    tiny-map (20,000 calls of ~0.1 ms), the unbatched forms tiny-map-unbatched
    and cpu-map-unbatched (batch_size=1), or your own FILE.py:FLOW. Each runs on the taskyard runner and on the bare
    backend beneath it (loop, ThreadPoolExecutor, ProcessPoolExecutor, Dask
    client, Ray) with one warm-up and --repeat timed runs; results are checked.

    How long: the default run (every installed runner, every workload,
    --repeat 3) takes about 2 minutes on a 2-core machine with the built-in
    runners, and about 7 minutes with the Dask runner installed as well
    (Ray adds more). `--runners threads --workloads noop-map` takes seconds.
    """
    from rich.console import Console

    from taskyard.bench.harness import run_benchmarks
    from taskyard.bench.report import results_table, to_document, write_json

    runners = _runners(runners_text)
    workloads = _workloads(workloads_text)
    if plot_path:
        _check_plot()
    console = Console(stderr=True)
    with _ProgressListener(console) as listener:
        run = run_benchmarks(runners, workloads, size=size, repeat=repeat, listener=listener)
    out = Console() if sys.stdout.isatty() else Console(width=150)
    out.print(results_table(run.results))
    for note in run.notes:
        console.print(f"[dim]note: {note}[/dim]")
    _warn_if_noisy(console, run.results)
    if json_path:
        command = "taskyard " + shlex.join(sys.argv[1:]) if sys.argv and "bench" in sys.argv else ""
        write_json(json_path, to_document(run, command))
        console.print(f"wrote {json_path}")
    if plot_path:
        from taskyard.bench.plot import plot_results

        plot_results(run.results, plot_path, title=_title())
        console.print(f"wrote {plot_path}")
    if run.errors:
        first = run.errors[0]
        raise BenchFailed(
            f"{len(run.errors)} benchmark(s) failed; first: {first.workload} on {first.runner}: {first.error}"
        )


def _warn_if_noisy(console: Any, rows: list[BenchResult]) -> None:
    from taskyard.bench.report import NOISY_SPREAD, noise_warnings

    noisy = noise_warnings(rows)
    if noisy:
        console.print(
            f"[yellow]warning: the machine was noisy: {len(noisy)} measurement(s) spread more than "
            f"{NOISY_SPREAD:.0%} of their median between the fastest and slowest run; compare medians with care, "
            "or run again on a quiet machine with a larger --repeat:[/yellow]"
        )
        for line in noisy:
            console.print(f"[yellow]  {line}[/yellow]")


def _check_plot() -> None:
    from taskyard.bench.plot import PlotUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailable as exc:
        raise UserError(str(exc)) from None


def _title() -> str:
    from taskyard.bench.report import machine_info

    m = machine_info()
    return f"taskyard bench — {m['cpu_count']} CPUs, {m['cpu_model']}, Python {m['python']}"


class _ProgressListener(Listener):
    """Shows a rich progress bar while the harness runs (a :class:`taskyard.bench.harness.Listener`)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        )  # fmt: skip
        self.task_id = self.progress.add_task("starting", total=None)

    def __enter__(self) -> _ProgressListener:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def begin(self, total: int) -> None:
        self.progress.update(self.task_id, total=total)

    def step(self, label: str, count: int = 1) -> None:
        self.progress.update(self.task_id, advance=count, description=label)

    def result(self, row: BenchResult) -> None:
        from taskyard.bench.report import fmt_seconds

        status = (
            f"[red]ERROR {row.error}[/red]"
            if row.error
            else f"{fmt_seconds(row.median_s)} (raw {fmt_seconds(row.raw_median_s)})"
        )
        self.console.print(f"{row.workload:<12} {row.runner:<11} {status}")

    def note(self, text: str) -> None:
        self.progress.update(self.task_id, description=text)
