"""What a flow run tells its user while it runs: lifecycle log lines and the live display.

::

    Flow run starts ── configure_console(settings) ── runner started ──▶ "Beginning flow run
       │                                                                 on runner 'dask'
       │  (outermost run, stdout a terminal, TASKYARD_PROGRESS on:       (dashboard: URL)"
       │   a RunCounter on the dispatcher; live display after a delay)
       ▼
    Flow run ends ── runner shut down ── display stopped ──▶ "Finished in state Completed in
                                                              4.21 s; task runs: 10,000 Completed"

Task runs log their own retries and failures in the engine, wherever they run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from taskyard.console import configure_console
from taskyard.context import FlowRunInfo
from taskyard.logs import RunLoggerAdapter, run_extra
from taskyard.progress import RunCounter, display_wanted
from taskyard.settings import Settings
from taskyard.states import State

__all__ = ("FlowRunReport",)

FLOW_RUN_LOGGER = "taskyard.flow_runs"


class FlowRunReport:
    """The log lines and progress display of one flow run.

    Args:
        info: The flow run.
        settings: The settings read when it started.
        outermost: No other flow run encloses it in this process (only
            those get a live display).
    """

    def __init__(self, info: FlowRunInfo, settings: Settings, outermost: bool) -> None:
        configure_console(settings)
        self.info = info
        self.log = RunLoggerAdapter(logging.getLogger(FLOW_RUN_LOGGER), run_extra(info, None))
        self.started = time.monotonic()
        wanted = outermost and display_wanted(settings.progress)
        self.counter: RunCounter | None = RunCounter(settings.progress_delay) if wanted else None

    def begin(self, flow_name: str, runner: Any) -> None:
        """Log the start of the run, with its runner and that runner's dashboard, if any."""
        link = getattr(runner, "dashboard_link", None)
        self.info.dashboard_link = link
        where = f"runner {getattr(runner, 'name', '') or type(runner).__name__!r}"
        dashboard = f" (dashboard: {link})" if link else ""
        self.log.info("Beginning flow run of flow %r on %s%s", flow_name, where, dashboard)

    def end(self, state: State[Any], names: Iterable[str]) -> None:
        """Stop the display and log how the run ended, with its task runs counted by ``names`` (of their states)."""
        if self.counter is not None:
            self.counter.stop()
        seconds = time.monotonic() - self.started
        counts = _count_states(names)
        runs = f"; task runs: {counts}" if counts else ""
        if state.is_completed():
            self.log.info("Finished in state %s in %s%s", state.name, _duration(seconds), runs)
            return
        # One line, no traceback: the exception itself goes to the caller (and
        # `taskyard run --traceback` prints it whole).
        reason = f": {state.message}" if state.message else ""
        self.log.error("Finished in state %s in %s%s%s", state.name, _duration(seconds), runs, reason)

    def abort(self, exc: BaseException) -> None:
        """Stop the display after an interrupt (Ctrl-C, SIGTERM) or a crash of the run itself.

        No line is logged here: an interrupted run says so in the one line
        its interruption handler prints.
        """
        if self.counter is not None:
            self.counter.stop()


def _count_states(names: Iterable[str]) -> str:
    counts = Counter(names)
    return ", ".join(f"{n:,} {name}" for name, n in counts.most_common())


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:.0f} s"
