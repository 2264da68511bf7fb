"""What a dead Dask worker costs the runs it held: the run it was running, not those queued on it.

Dask reports every task a dead worker held with the same ``KilledWorker``
error (a runner-started LocalCluster uses ``allowed_failures=0``), whether
the worker was running it or only had it queued, and the worker's last
news dies with it: a run that finished just before the worker died (its
"finished" message still waiting to be sent) is reported lost too. So the
runner judges each dead worker process once, from every run of this flow
lost with it (:class:`Deaths`), and each run gets one of three verdicts:

::

    RUNNING  its start was reported (see below), or the worker had no more
             such runs than threads: it was running them all
             → the attempt is lost: placed again while its retries allow, then
               Crashed "a Dask worker process died while running task run …"
    QUEUED   it was reported not to have started, or the runs whose start was
             reported fill the worker's threads
             → placed again; its retries are untouched. After MAX_ORPHANED such
               deaths: Crashed "… died N times holding task run … before it
               started" (loading its arguments may be what kills them)
    UNKNOWN  neither: more runs than threads, no word on which were running
             → placed again, its retries untouched

A run once lost with a worker reports its start from then on: a direct call
from the worker to the scheduler before the run begins, so it cannot be
lost with the worker, and the run's next loss is judged exactly. The report
costs a scheduler round trip, so only those runs, and the calls of a failed
batch run again one group at a time (:mod:`taskyard_dask.batches`), carry
it. The scheduler's last heartbeat (which runs a worker was executing) is
not used: a run it names may have finished since, its news lost. This
mirrors the process runner, which always knows which call each worker was
running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskyard.exceptions import CrashedRunError
from taskyard.runners.base import Crashed, set_state
from taskyard.runners.toolkit import lose_attempt, lost_state

if TYPE_CHECKING:
    from taskyard_dask.entries import Entry
    from taskyard_dask.runner import DaskTaskRunner

__all__ = ("Deaths", "Losses", "crash", "error_of", "RUNNING", "QUEUED", "UNKNOWN", "SETTLE_SECONDS", "MAX_ORPHANED")

logger = logging.getLogger("taskyard.dask")

RUNNING, QUEUED, UNKNOWN = "running", "queued", "unknown"
# A dead worker is judged once no more of its runs have been reported lost for this long
# (the scheduler reports them all at once; this covers their trip to the flow process).
SETTLE_SECONDS = 0.5
# Deaths of workers holding a run that had not started before it is taken for their cause.
MAX_ORPHANED = 3
# A run whose upstreams keep being lost is placed again at most this often.
MAX_PLACEMENTS = 20

# started() → True (it started), False (it did not), None (nobody knows)
Started = Callable[[], "bool | None"]
Decide = Callable[[str], None]


class _Unit:
    __slots__ = ("key", "started", "decide")

    def __init__(self, key: str, started: Started, decide: Decide | None) -> None:
        self.key, self.started, self.decide = key, started, decide


class _Death:
    __slots__ = ("threads", "units", "last", "judged")

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.units: list[_Unit] = []
        self.last = time.monotonic()
        self.judged = False

    def verdict(self, unit: _Unit) -> str:
        started = unit.started()
        if started is not None:
            return RUNNING if started else QUEUED
        reports = [other.started() for other in self.units]
        if sum(report is not False for report in reports) <= self.threads:
            return RUNNING
        return QUEUED if sum(report is True for report in reports) >= self.threads else UNKNOWN


class Deaths:
    """Flow side: groups the runs (Dask tasks) lost with each dead worker process and judges them together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deaths: dict[str, _Death] = {}

    def judge(self, exc: BaseException, key: str, started: Started, decide: Decide | None) -> None:
        """Call ``decide(verdict)`` soon for the Dask task ``key`` lost with its worker (``exc``: KilledWorker).

        ``decide=None`` counts the task among its worker's runs without asking for a verdict.
        """
        last: Any = getattr(exc, "last_worker", None)
        # One worker process's life: a nanny may start the next one at the same address.
        worker = f"{getattr(last, 'address', '')}/{getattr(last, 'server_id', '') or getattr(last, 'pid', '')}"
        unit = _Unit(key, started, decide)
        with self._lock:
            death = self._deaths.get(worker)
            first = death is None
            if death is None:
                death = self._deaths[worker] = _Death(int(getattr(last, "nthreads", 0) or 1))
            late = death.judged
            death.units.append(unit)
            death.last = time.monotonic()
        if late:  # reported after its worker was judged: among all its worker's runs
            if decide is not None:
                decide(death.verdict(unit))
        elif first:
            threading.Thread(target=self._settle, args=(worker,), name="taskyard-dask-death", daemon=True).start()

    def _settle(self, worker: str) -> None:
        while True:
            with self._lock:
                death = self._deaths[worker]
                wait = death.last + SETTLE_SECONDS - time.monotonic()
                if wait <= 0:
                    death.judged = True
                    units = list(death.units)  # those reported later are judged as they come
                    break
            time.sleep(wait)
        for unit in units:
            if unit.decide is not None:
                try:
                    unit.decide(death.verdict(unit))
                except Exception:  # a decision must never die silently: its future would hang
                    logger.exception("handling a run lost with its Dask worker failed")


class Losses:
    """The runner's handling of runs that ended in error on Dask: lost with a worker, or with an upstream."""

    def __init__(self, runner: DaskTaskRunner) -> None:
        self.runner = runner
        self.deaths = Deaths()
        self.topic = ""
        self._started: set[str] = set()

    def listen(self, client: Any, topic: str) -> None:
        """Receive the start reports of marked runs on ``topic`` (see :func:`taskyard_dask.worker.report_start`)."""
        self.topic = topic
        client.subscribe_topic(topic, self._on_start)

    def _on_start(self, event: tuple[float, Any]) -> None:
        self._started.add(str(event[1]))

    def started(self, mark: str) -> bool:
        """True if the marked run (or batch call) ``mark`` reported its start."""
        return mark in self._started

    def is_killed(self, exc: Any) -> bool:
        """True if ``exc`` says the worker holding the task died."""
        return isinstance(exc, self.runner._killed_worker)

    # -- one run, alone in its Dask task ---------------------------------------------------

    def on_error(self, entry: Entry, native: Any) -> None:
        """``entry``'s Dask task ended in error: its worker died, an upstream was lost, or Dask failed."""
        runner = self.runner
        exc = error_of(native)
        killed = self.is_killed(exc)
        if killed:
            own = getattr(exc, "task", native.key) == native.key
        else:
            own = not any(_errored(runner, up) for up, _ in entry.call.upstreams)
        if not own:  # an upstream was lost: place this run again once that one settles
            entry.placements += 1
            if entry.placements > MAX_PLACEMENTS:
                message = f"task run {entry.call.task_run.name!r} could not be placed: its upstreams kept failing on Dask"
                set_state(entry.future, Crashed(message, exc=CrashedRunError(message)))
                return
            entry.rekey("p")
            runner._place(entry)
            return
        if killed:  # running, or only queued there?
            runner._outstanding.add(("judging", id(entry)), entry)  # still in flight for shutdown
            key = native.key
            started = (lambda: self.started(key)) if entry.marked else (lambda: None)
            self.deaths.judge(exc, key, started, lambda verdict: self._judged(entry, exc, verdict))
            return
        entry.losses += 1
        crash(entry, exc)

    def _judged(self, entry: Entry, exc: BaseException, verdict: str) -> None:
        runner = self.runner
        if runner._outstanding.pop(("judging", id(entry))) is None:
            return  # cancelled meanwhile: its future ended Cancelled
        if verdict == RUNNING:
            again = self.lose(entry, exc)
        elif verdict == QUEUED:
            again = self.orphan(entry)
        else:
            logger.info(
                "task run %r was on a Dask worker that died, maybe before it started; placing it again",
                entry.call.task_run.name,
            )
            again = True
        if again:
            entry.marked = True  # from now on its start is reported: its next loss is judged exactly
            entry.rekey(verdict[0])
            runner._place(entry)

    # -- verdicts shared with batches ------------------------------------------------------

    def lose(self, entry: Entry, exc: BaseException) -> bool:
        """``entry``'s worker died running it: True if it runs again (its retries allow), else it ends Crashed."""
        entry.losses += 1
        call = entry.call
        if lose_attempt(call, entry.losses, self.runner._outstanding.closing):
            logger.warning(
                "a Dask worker died running task run %r; running it again (retry %d of %d)",
                call.task_run.name, entry.losses, call.task.retries,
            )  # fmt: skip
            return True
        set_state(entry.future, lost_state(call, entry.losses, "a Dask worker process died", exc))
        return False

    def orphan(self, entry: Entry) -> bool:
        """``entry``'s worker died before it started: True if it is placed again, else it ends Crashed."""
        entry.orphaned += 1
        name = entry.call.task_run.name
        if entry.orphaned < MAX_ORPHANED:
            logger.debug("task run %r was queued on a Dask worker that died; placing it again", name)
            return True
        message = (
            f"Dask worker processes died {entry.orphaned} times holding task run {name!r} before it started; "
            "loading its arguments may kill them"
        )
        set_state(entry.future, Crashed(message, exc=CrashedRunError(message), run_count=entry.losses))
        return False


def crash(entry: Entry, exc: BaseException) -> None:
    """End ``entry`` Crashed: Dask failed running it, for a reason other than its worker's death."""
    message = f"Dask failed running task run {entry.call.task_run.name!r}: {exc!r}"
    error = CrashedRunError(message)
    error.__cause__ = exc if isinstance(exc, BaseException) else None
    set_state(entry.future, Crashed(message, exc=error, run_count=entry.losses))


def error_of(native: Any) -> Any:
    """The exception a Dask future in error holds (or the one reading it raised)."""
    try:
        return native.exception(timeout=30)
    except Exception as error:
        return error


def _errored(runner: DaskTaskRunner, upstream: Any) -> bool:
    native = getattr(upstream, "native", None)
    return isinstance(native, runner._future_class) and native.status in ("error", "cancelled", "lost")
