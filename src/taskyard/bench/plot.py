"""PNG charts of a benchmark run: one chart per workload, taskyard beside the raw backend.

matplotlib is an optional extra (``pip install 'taskyard[plot]'``);
:func:`require_matplotlib` says so in one line before a run starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from taskyard.bench.harness import BenchResult

__all__ = ("PlotUnavailable", "require_matplotlib", "plot_results")


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` (one line, with the install command) if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'taskyard[plot]'") from None


def plot_results(rows: Sequence[BenchResult], path: str | os.PathLike[str], title: str = "") -> None:
    """Draw one bar chart per workload (median wall time, log scale, min–max whiskers); save a PNG.

    Raises:
        PlotUnavailable: matplotlib is not installed.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r.workload for r in rows))
    cols = min(3, max(1, len(workloads)))
    nrows = math.ceil(len(workloads) / cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads, strict=False):
        _draw(ax, [r for r in rows if r.workload == workload and not r.error], workload)
    for ax in list(axes.flat)[len(workloads) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw(ax: object, rows: list[BenchResult], workload: str) -> None:
    runners = [r.runner for r in rows]
    xs = list(range(len(rows)))
    width = 0.38

    def bars(
        offset: float, med: list[float | None], lo: list[float | None], hi: list[float | None], label: str, color: str
    ) -> None:
        vals = [m or 0.0 for m in med]
        err = [
            [(m or 0) - (a or m or 0) for m, a in zip(med, lo, strict=True)],
            [(b or m or 0) - (m or 0) for m, b in zip(med, hi, strict=True)],
        ]
        ax.bar([x + offset for x in xs], vals, width, yerr=err, capsize=3, label=label, color=color)  # type: ignore[attr-defined]

    bars(
        -width / 2, [r.median_s for r in rows], [r.min_s for r in rows], [r.max_s for r in rows], "taskyard", "#3b75af"
    )
    bars(
        width / 2,
        [r.raw_median_s for r in rows],
        [r.raw_min_s for r in rows],
        [r.raw_max_s for r in rows],
        "raw backend",
        "#bbbbbb",
    )
    for x, r in zip(xs, rows, strict=True):
        if r.ratio_to_raw:
            top = max(r.max_s or 0, r.raw_max_s or 0)
            ax.annotate(f"×{r.ratio_to_raw:.2f}", (x, top), ha="center", va="bottom", fontsize=8)  # type: ignore[attr-defined]
    size = rows[0].size if rows else None
    ax.set_title(f"{workload}" + (f" (N={size:,})" if size else ""), fontsize=10)  # type: ignore[attr-defined]
    ax.set_xticks(xs, runners)  # type: ignore[attr-defined]
    ax.set_ylabel("median wall time (s, log scale)")  # type: ignore[attr-defined]
    ax.set_yscale("log")  # type: ignore[attr-defined]  # a loop and a process pool differ 1000x
    ax.legend(fontsize=8)  # type: ignore[attr-defined]
