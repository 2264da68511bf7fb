"""``taskyard bench`` and ``taskyard.bench``: a small smoke run, name errors, result checking.

Correctness only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from taskyard.bench import WORKLOADS, Workload, run_benchmarks
from taskyard.bench.harness import BenchResult
from taskyard.bench.memory import PeakRSS
from taskyard.bench.plot import _draw, axis_scale
from taskyard.bench.report import noise_warnings
from taskyard.bench.workloads import WrongResultError
from taskyard.cli.main import cli
from taskyard.runners import register_runner
from taskyard.runners.registry import registry
from taskyard.runs import list_flow_runs

FIELDS = {
    "workload", "runner", "size", "repeat", "median_s", "min_s", "max_s", "tasks_per_s",
    "raw_median_s", "ratio_to_raw", "peak_rss_mb",
}  # fmt: skip


def _bench(*args: str) -> object:
    return CliRunner().invoke(cli, ["bench", *args])


class TestNames:
    def test_unknown_runner_lists_the_valid_ones(self) -> None:
        """An unknown runner name fails with one line naming the valid runners, exit code 2."""
        result = _bench("--runners", "threads,nosuch", "--workloads", "noop-map")
        assert result.exit_code == 2
        assert "unknown runner 'nosuch'" in result.output
        assert "sequential" in result.output and "threads" in result.output
        assert "Traceback" not in result.output

    def test_unknown_workload_lists_the_valid_ones(self) -> None:
        """An unknown workload name fails with one line naming the valid workloads, exit code 2."""
        result = _bench("--runners", "sequential", "--workloads", "noop-map,nosuch")
        assert result.exit_code == 2
        assert "unknown workload 'nosuch'" in result.output
        assert all(name in result.output for name in WORKLOADS)

    def test_bad_flow_reference_is_a_user_error(self, tmp_path: Path) -> None:
        """A FILE.py:FLOW that does not exist fails with one line, exit code 2."""
        result = _bench("--runners", "sequential", "--workloads", f"{tmp_path}/missing.py:nope")
        assert result.exit_code == 2
        assert "no such file" in result.output


class TestSmokeRun:
    def test_builtin_workloads_run_and_write_json(self, tmp_path: Path) -> None:
        """Small built-in workloads run on sequential and threads; the JSON holds one checked row each."""
        out = tmp_path / "bench.json"
        names = "noop-map,chain,fan-in,many-flows"
        result = _bench(
            "--runners", "sequential,threads", "--workloads", names, "--size", "12", "--repeat", "1", "--json", str(out)
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(out.read_text())
        assert doc["machine"]["cpu_count"] >= 1
        rows = doc["results"]
        assert {(r["workload"], r["runner"]) for r in rows} == {
            (w, r) for w in names.split(",") for r in ("sequential", "threads")
        }
        for row in rows:
            assert set(row) >= FIELDS
            assert row["error"] is None
            assert row["median_s"] > 0 and row["raw_median_s"] > 0 and row["ratio_to_raw"] > 0

    def test_cpu_and_large_arg_on_processes(self) -> None:
        """cpu-map and large-arg give correct results on the process pool and on the raw ProcessPoolExecutor."""
        picked = [WORKLOADS["cpu-map"], WORKLOADS["large-arg"]]
        run = run_benchmarks(["processes"], picked, size=2, repeat=1)
        assert [r.error for r in run.results] == [None, None]
        assert all(r.raw_median_s and r.peak_rss_mb for r in run.results)

    def test_dask_runner_and_its_raw_client(self) -> None:
        """With taskyard-dask installed, workloads run on the Dask runner and on raw client.map, on one cluster."""
        pytest.importorskip("taskyard_dask", reason="the Dask plugin is optional: pip install -e plugins/taskyard-dask")
        picked = [WORKLOADS["noop-map"], WORKLOADS["chain"], WORKLOADS["fan-in"], WORKLOADS["large-arg"]]
        run = run_benchmarks(["dask"], picked, size=4, repeat=1)
        assert [r.error for r in run.results] == [None] * 4
        assert all(r.raw_median_s for r in run.results)
        assert any("raw baseline on the runner's own client" in note for note in run.notes)

    def test_user_flow(self, tmp_path: Path) -> None:
        """A user's FILE.py:FLOW runs as a workload, timed around the flow call, without a raw baseline."""
        path = tmp_path / "myflow.py"
        path.write_text(
            textwrap.dedent("""
            from taskyard import flow, task

            @task
            def double(x):
                return 2 * x

            @flow
            def doubling():
                return sum(double.map(range(5)).result())
        """)
        )
        out = tmp_path / "user.json"
        result = _bench("--runners", "threads", "--workloads", f"{path}:doubling", "--repeat", "1", "--json", str(out))
        assert result.exit_code == 0, result.output
        (row,) = json.loads(out.read_text())["results"]
        assert row["error"] is None and row["median_s"] > 0 and row["raw_median_s"] is None

    def test_missing_plugin_is_skipped_with_a_note(self) -> None:
        """A registered runner whose package is not installed is skipped with a note, not an error."""
        register_runner("ghost", "taskyard_ghost_not_installed:GhostTaskRunner")
        try:
            run = run_benchmarks(["ghost", "sequential"], [WORKLOADS["noop-map"]], size=3, repeat=1)
        finally:
            registry.reset()
        assert [r.runner for r in run.results] == ["sequential"]
        assert any("ghost" in note and "skipped" in note for note in run.notes)

    def test_benchmark_runs_stay_out_of_the_run_history(self, tmp_path: Path) -> None:
        """The flow runs a benchmark makes are recorded in a scratch home, never the user's."""
        run = run_benchmarks(["threads"], [WORKLOADS["noop-map"]], size=5, repeat=1)
        assert not run.errors
        assert list_flow_runs() == []


class TestChecking:
    def test_wrong_result_is_an_error(self) -> None:
        """A workload whose runs return a wrong value is reported as an error, with no timing."""

        def check(result: object, size: int, data: object) -> None:
            if result != "right":
                raise WrongResultError(f"got {result!r}")

        wrong = Workload("wrong", "returns the wrong thing", 1, lambda n, d: "wrong", lambda b, n, d: "right", check)
        run = run_benchmarks(["sequential"], [wrong], repeat=1)
        (row,) = run.results
        assert row.error is not None and "taskyard result of 'wrong' is wrong" in row.error
        assert row.median_s is None and run.errors == [row]

    def test_wrong_result_fails_the_command(self, tmp_path: Path) -> None:
        """A user flow that fails makes ``taskyard bench`` exit 1 and name the failing run."""
        path = tmp_path / "bad.py"
        path.write_text("from taskyard import flow\n\n@flow\ndef bad():\n    raise ValueError('boom')\n")
        result = _bench("--runners", "sequential", "--workloads", f"{path}:bad", "--repeat", "1")
        assert result.exit_code == 1
        assert "failed" in result.output and "bad" in result.output


class TestOutputs:
    def test_plot_writes_a_png(self, tmp_path: Path) -> None:
        """--plot writes a PNG chart when matplotlib is installed."""
        pytest.importorskip("matplotlib", reason="plotting is the optional [plot] extra")
        png = tmp_path / "bench.png"
        result = _bench(
            "--runners", "sequential", "--workloads", "noop-map", "--size", "5", "--repeat", "1", "--plot", str(png)
        )
        assert result.exit_code == 0, result.output
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_plot_without_matplotlib_is_one_line(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """--plot without matplotlib fails before running, with the install command."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        result = _bench("--runners", "sequential", "--workloads", "noop-map", "--plot", str(tmp_path / "x.png"))
        assert result.exit_code == 2
        assert "pip install matplotlib" in result.output

    def test_peak_rss_is_measured(self) -> None:
        """PeakRSS reports a positive peak for the block."""
        with PeakRSS(interval=0.01) as peak:
            blob = bytearray(8 * 2**20)
        del blob
        assert peak.mb is not None and peak.mb > 8

    def test_import_taskyard_does_not_import_bench(self) -> None:
        """``import taskyard`` imports neither taskyard.bench nor rich nor click."""
        code = "import sys, taskyard; print([m for m in ('taskyard.bench', 'rich', 'click') if m in sys.modules])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"


def _row(runner: str, median: float | None, spread: float = 0.1, raw: float | None = None) -> BenchResult:
    return BenchResult(
        "w", runner, 10, 3, median_s=median, min_s=median and median * (1 - spread / 2), max_s=median and median * (1 + spread / 2),
        raw_median_s=raw, raw_min_s=raw, raw_max_s=raw,
    )  # fmt: skip


class TestCharts:
    def _axes(self, rows: list[BenchResult], tmp_path: Path) -> Any:
        pytest.importorskip("matplotlib", reason="plotting is the optional [plot] extra")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        _draw(ax, rows, "w")
        plt.close(fig)
        return ax

    def test_values_within_ten_times_get_a_linear_axis(self, tmp_path: Path) -> None:
        """Bars within 10x of each other share a linear axis; spanning decades, a log one."""
        assert axis_scale([1.0, 3.0, 9.9, None]) == "linear"
        assert axis_scale([0.001, 1.0]) == "log"
        assert self._axes([_row("a", 1.0, raw=2.0), _row("b", 5.0, raw=4.0)], tmp_path).get_yscale() == "linear"
        assert self._axes([_row("a", 0.01, raw=2.0), _row("b", 5.0)], tmp_path).get_yscale() == "log"

    def test_absent_bars_have_no_legend_entry(self, tmp_path: Path) -> None:
        """A workload without a raw baseline (a user's flow) draws no raw bars and no 'raw backend' entry."""
        ax = self._axes([_row("threads", 1.0), _row("processes", 2.0)], tmp_path)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["taskyard"] and len(ax.patches) == 2

    def test_min_max_whiskers_are_drawn(self, tmp_path: Path) -> None:
        """Each bar carries an error bar from its min to its max."""
        ax = self._axes([_row("threads", 1.0, spread=0.4)], tmp_path)
        from matplotlib.container import ErrorbarContainer

        (errorbar,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        ((_, low), (_, high)) = errorbar.lines[2][0].get_segments()[0]
        assert (round(low, 3), round(high, 3)) == (0.8, 1.2)


class TestNoiseWarning:
    def test_a_wide_spread_is_reported(self) -> None:
        """A min–max spread over half the median is listed; a tight one is not."""
        rows = [_row("threads", 1.0, spread=0.1), _row("dask", 2.0, spread=0.8)]
        (line,) = noise_warnings(rows)
        assert line.startswith("w on dask: 1.20 s–2.80 s around a median of 2.00 s")

    def test_the_command_prints_the_warning(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """bench prints a warning naming the noisy measurements."""
        from taskyard.bench import harness
        from taskyard.cli import bench as bench_cli

        def fake_run(*args: Any, **kwargs: Any) -> harness.BenchRun:
            return harness.BenchRun(results=[_row("sequential", 1.0, spread=0.9)])

        monkeypatch.setattr(harness, "run_benchmarks", fake_run)
        result = CliRunner().invoke(bench_cli.bench, ["--runners", "sequential", "--workloads", "noop-map"])
        assert "warning: the machine was noisy" in result.output and "w on sequential" in result.output
