"""Peak resident memory of this process and its children while a block runs.

With psutil (installed alongside Dask, and in most environments), a
background thread samples the RSS of this process plus every descendant
(process-pool workers, Dask nannies and workers) every ``interval`` seconds
and keeps the peak. Without psutil, ``resource.getrusage`` gives the peak of
this process and of its *finished* children since they started — a coarser,
lifetime figure.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

__all__ = ("PeakRSS",)

_MB = 1024 * 1024


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mb``: the peak RSS in MiB seen during the block."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.mb: float | None = None
        self.method = "psutil"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def __enter__(self) -> PeakRSS:
        try:
            import psutil
        except ImportError:
            self.method = "getrusage"
            return self
        self._proc = psutil.Process()
        self._psutil: Any = psutil
        self._sample()
        self._thread = threading.Thread(target=self._run, name="taskyard-bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            self.mb = _getrusage_mb()
            return
        self._stop.set()
        self._thread.join()
        self._sample()
        self.mb = self._peak / _MB

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        total = 0
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
        except self._psutil.Error:
            return
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except self._psutil.Error:  # a child that just exited
                continue
        self._peak = max(self._peak, total)


def _getrusage_mb() -> float:
    import resource
    import sys

    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit
    return (own + children) / _MB
