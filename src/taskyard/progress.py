"""Live progress of a flow run's task runs: cheap counters, and a display that reads them.

::

    Dispatcher.submit/map ──track(name, futures)──▶ RunCounter   (total += n; one
                                                        │         done-callback per future)
    future done (any thread) ──▶ _Count.on_done ────────┘         done, failed: list appends
                                                        ▲
    ProgressDisplay thread: waits ``delay`` ──▶ imports rich ──▶ every 0.25 s reads the
                                                              counters and redraws one
                                                              line per task name

Counting is all the flow's workers pay: one list append when a run finishes
(no lock). Drawing happens on the display's own thread a few times a second,
whatever the number of runs. rich is imported only when a display appears.

A runner that leaves states on its cluster until they are read (Dask) finishes
its futures with a placeholder state; those runs count as done here, and the
flow run's summary line counts them by their real states at the end.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from taskyard.futures import TaskFuture, add_done_callbacks
from taskyard.states import StateType

__all__ = ("RunCounter", "ProgressDisplay", "display_wanted")

_BAD = (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)  # a tuple: `in` compares in C; an enum hashes in Python
_active = threading.Lock()  # one live display per process at a time


class _Count:
    """The runs of one task name in one flow run.

    A finished run appends to a list instead of taking a lock: ``list.append``
    is atomic, and this is the one thing every run pays for the display.
    """

    __slots__ = ("name", "total", "_done", "_failed", "start", "end")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self._done: list[None] = []
        self._failed: list[None] = []
        self.start = time.monotonic()
        self.end: float | None = None

    @property
    def done(self) -> int:
        return len(self._done)

    @property
    def failed(self) -> int:
        return len(self._failed)

    def on_done(self, future: TaskFuture[Any]) -> None:
        done = self._done
        done.append(None)
        state = future._state
        if state is not None and state.type in _BAD:
            self._failed.append(None)
        if len(done) >= self.total:
            self.end = time.monotonic()

    def add(self, done: int, failed: int) -> None:
        """Count ``done`` runs finished at once, ``failed`` of them in a bad state (a lane's block)."""
        finished = self._done
        finished.extend(itertools.repeat(None, done))
        if failed:
            self._failed.extend(itertools.repeat(None, failed))
        if len(finished) >= self.total:
            self.end = time.monotonic()


class RunCounter:
    """Counts submitted and finished task runs per task name.

    Args:
        delay: Seconds after the first map until the live display appears;
            None: never show one (count only).
    """

    def __init__(self, delay: float | None = None) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, _Count] = {}
        self.delay = delay
        self.display: ProgressDisplay | None = None

    def track(self, name: str, futures: Iterable[TaskFuture[Any]], *, mapped: bool = False) -> None:
        """Count ``futures`` as runs of ``name``; each counts as done when it finishes."""
        futures = list(futures)
        add_done_callbacks(futures, self.expect(name, len(futures), mapped=mapped).on_done)

    def expect(self, name: str, total: int, *, mapped: bool = False) -> _Count:
        """Count ``total`` runs of ``name`` to come; pass each one's future to the answer's ``on_done``.

        For runs that finish as they are submitted (the sequential runner): the
        display starts its clock before the first of them, not after the last.
        """
        with self._lock:
            count = self.counts.get(name)
            if count is None:
                count = self.counts[name] = _Count(name)
            count.total += total
            count.end = None
        if mapped and self.display is None and self.delay is not None:
            self.display = ProgressDisplay(self, self.delay)
        return count

    def stop(self) -> None:
        """Stop the display, if one was started, after drawing the final counts."""
        if self.display is not None:
            self.display.stop()

    def snapshot(self) -> list[tuple[str, int, int, int, float]]:
        """``(name, done, failed, total, elapsed seconds)`` per task name, in first-seen order."""
        now = time.monotonic()
        with self._lock:
            return [(c.name, c.done, c.failed, c.total, (c.end or now) - c.start) for c in self.counts.values()]


def display_wanted(enabled: bool) -> bool:
    """True when the setting allows a display and standard output is a terminal."""
    if not enabled:
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class ProgressDisplay:
    """Draws a :class:`RunCounter` with rich, from ``delay`` seconds after the first map.

    A flow run that ends before then shows nothing (no flicker for small
    flows). Only one display runs in a process at a time; a second flow
    run started meanwhile (a subflow, another thread) draws none.
    """

    REFRESH_SECONDS = 0.25

    def __init__(self, counter: RunCounter, delay: float) -> None:
        self.counter = counter
        self.delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskyard-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Draw the final counts and stop (waits for the display thread)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        if not _active.acquire(blocking=False):
            return
        try:
            self._draw()
        finally:
            _active.release()

    def _draw(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]} done"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[rate]:>10}"),
            TextColumn("[cyan]{task.fields[elapsed]}"),
            console=Console(file=sys.stdout),
            auto_refresh=False,
        )
        ids: dict[str, Any] = {}
        with progress:
            while True:
                stopping = self._stop.is_set()
                for name, done, failed, total, elapsed in self.counter.snapshot():
                    fields: dict[str, Any] = {
                        "count": f"{done:>{len(f'{total:,}')},}/{total:,}",
                        "failed": f"[red]{failed:,} failed[/red]" if failed else "0 failed",
                        "rate": f"{done / elapsed:,.0f}/s" if elapsed > 0 else "",
                        "elapsed": _clock(elapsed),
                    }
                    if name not in ids:
                        ids[name] = progress.add_task(name, total=total, completed=done, **fields)
                    else:
                        progress.update(ids[name], total=total, completed=done, **fields)
                progress.refresh()
                if stopping:
                    return
                self._stop.wait(self.REFRESH_SECONDS)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
