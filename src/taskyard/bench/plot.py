"""PNG charts of a benchmark run: one chart per workload, taskyard beside the raw backend.

matplotlib is an optional extra (``pip install matplotlib``, or the ``plot`` extra);
:func:`require_matplotlib` says so in one line before a run starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from taskyard.bench.harness import BenchResult

__all__ = ("PlotUnavailable", "require_matplotlib", "plot_results", "axis_scale")


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` (one line, with the install command) if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install matplotlib") from None


def plot_results(rows: Sequence[BenchResult], path: str | os.PathLike[str], title: str = "") -> None:
    """Draw one bar chart per workload (median wall time with min–max whiskers); save a PNG.

    A chart's axis is linear when its values are within 10x of each other,
    logarithmic when they span more.

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


# Within this factor the bars share a linear axis; values spanning more
# (a loop beside a process pool, 1000x) get a log axis.
LINEAR_SPAN = 10.0


def axis_scale(values: Sequence[float | None]) -> str:
    """``"linear"`` when the positive values are within :data:`LINEAR_SPAN` of each other, else ``"log"``."""
    present = [v for v in values if v is not None and v > 0]
    if not present or max(present) / min(present) <= LINEAR_SPAN:
        return "linear"
    return "log"


def _draw(ax: Any, rows: list[BenchResult], workload: str) -> None:
    runners = [r.runner for r in rows]
    xs = list(range(len(rows)))
    groups = [
        ("taskyard", "#3b75af", [(r.median_s, r.min_s, r.max_s) for r in rows]),
        ("raw backend", "#bbbbbb", [(r.raw_median_s, r.raw_min_s, r.raw_max_s) for r in rows]),
    ]
    # A group with no value at all (a user's flow has no raw baseline) gets no bars and no legend entry.
    groups = [g for g in groups if any(m is not None for m, _, _ in g[2])]
    width = 0.76 / max(1, len(groups))
    for i, (label, color, values) in enumerate(groups):
        offset = (i - (len(groups) - 1) / 2) * width
        at = [(x + offset, m, lo, hi) for x, (m, lo, hi) in zip(xs, values, strict=True) if m is not None]
        err = [[m - (lo if lo is not None else m) for _, m, lo, _ in at], [(hi if hi is not None else m) - m for _, m, _, hi in at]]
        ax.bar([a[0] for a in at], [a[1] for a in at], width, yerr=err, capsize=3, label=label, color=color)
    for x, r in zip(xs, rows, strict=True):
        if r.ratio_to_raw:
            top = max(r.max_s or 0, r.raw_max_s or 0)
            ax.annotate(f"×{r.ratio_to_raw:.2f}", (x, top), ha="center", va="bottom", fontsize=8)
    sizes = {r.size for r in rows}
    size = rows[0].size if len(sizes) == 1 else None
    ax.set_title(f"{workload}" + (f" (N={size:,})" if size else ""), fontsize=10)
    if len(sizes) > 1:  # rows recorded at different sizes: each bar says its own
        runners = [f"{r.runner}\nN={r.size:,}" if r.size else r.runner for r in rows]
    ax.set_xticks(xs, runners)
    scale = axis_scale([v for _, _, values in groups for triple in values for v in triple])
    ax.set_yscale(scale)
    ax.set_ylabel(f"median wall time, s ({'log scale; ' if scale == 'log' else ''}bars: min–max)", fontsize=8)
    if groups:
        ax.legend(fontsize=8)
