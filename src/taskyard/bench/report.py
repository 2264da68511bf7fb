"""What a benchmark run reports: the machine, the JSON document and the terminal table."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskyard.bench.harness import BenchResult, BenchRun

__all__ = ("machine_info", "to_document", "write_json", "read_results", "results_table", "fmt_seconds")


def machine_info() -> dict[str, Any]:
    """A description of this machine and of the versions that matter for the figures."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("taskyard", "taskyard-dask", "taskyard-ray", "cloudpickle", "pydantic", "distributed", "ray"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def to_document(run: BenchRun, command: str = "") -> dict[str, Any]:
    """The JSON document: ``{"machine", "command", "notes", "results": [...]}``."""
    return {
        "machine": machine_info(),
        "command": command,
        "notes": list(run.notes),
        "results": [_rounded(r.to_dict()) for r in run.results],
    }


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in row.items()}


def write_json(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` as indented JSON."""
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def read_results(path: str | os.PathLike[str]) -> list[BenchResult]:
    """The rows of a JSON file written by ``--json`` (to re-draw or compare them)."""
    document = json.loads(Path(path).read_text())
    return [BenchResult(**row) for row in document["results"]]


def fmt_seconds(value: float | None) -> str:
    """``0.0123`` → ``"12.3 ms"``; None → ``"–"``."""
    if value is None:
        return "–"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def _per_task_us(row: BenchResult) -> str:
    if row.median_s is None or not row.tasks:
        return "–"
    return f"{row.median_s / row.tasks * 1e6:,.1f}"


def results_table(rows: Sequence[BenchResult]) -> Any:
    """A :class:`rich.table.Table` of the rows (errors in red)."""
    from rich.table import Table

    table = Table(title="taskyard bench", header_style="bold")
    for name, justify in (
        ("workload", "left"), ("runner", "left"), ("size", "right"), ("median", "right"),
        ("min–max", "right"), ("tasks/s", "right"), ("µs/task", "right"), ("raw median", "right"),
        ("×raw", "right"), ("peak RSS MB", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        if row.error:
            table.add_row(row.workload, row.runner, _str(row.size), f"[red]ERROR: {row.error}[/red]")
            continue
        table.add_row(
            row.workload,
            row.runner,
            _str(row.size),
            fmt_seconds(row.median_s),
            f"{fmt_seconds(row.min_s)}–{fmt_seconds(row.max_s)}",
            f"{row.tasks_per_s:,.0f}" if row.tasks_per_s else "–",
            _per_task_us(row),
            fmt_seconds(row.raw_median_s),
            f"{row.ratio_to_raw:.2f}" if row.ratio_to_raw else "–",
            f"{row.peak_rss_mb:,.0f}" if row.peak_rss_mb else "–",
        )
    return table


def _str(value: Any) -> str:
    return "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


# A min–max spread wider than this fraction of the median says the machine
# was busy with something else while the benchmark ran.
NOISY_SPREAD = 0.5


def noise_warnings(rows: Sequence[BenchResult], threshold: float = NOISY_SPREAD) -> list[str]:
    """One line per measurement whose min–max spread exceeds ``threshold`` × its median."""
    found = []
    for row in rows:
        for label, median, low, high in (
            ("", row.median_s, row.min_s, row.max_s),
            (" (raw)", row.raw_median_s, row.raw_min_s, row.raw_max_s),
        ):
            if median and low is not None and high is not None and (high - low) > threshold * median:
                found.append(
                    f"{row.workload} on {row.runner}{label}: {fmt_seconds(low)}–{fmt_seconds(high)} "
                    f"around a median of {fmt_seconds(median)}"
                )
    return found
