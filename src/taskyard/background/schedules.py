"""Schedules of served deployments: every N seconds, or a cron expression.

A schedule answers one question: the first start time strictly after a
moment. A server asks it from *now* when it starts and after each slot,
so slots missed while nothing served are skipped, never replayed.

Cron expressions are read by cronsim (the optional ``cron`` extra,
``pip install 'taskyard[cron]'``): a small, maintained, dependency-free
parser and evaluator (the one Prefect uses too), with time zones and DST.
"""

from __future__ import annotations

import abc
import math
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ("Schedule", "Interval", "Cron", "make_schedules")


class Schedule(abc.ABC):
    """When a deployment's runs start."""

    @abc.abstractmethod
    def next_after(self, moment: float) -> float:
        """The first start time (POSIX seconds) strictly after ``moment``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human-readable description (``every 60 s``, ``cron '0 4 * * sun'``)."""


class Interval(Schedule):
    """Every ``seconds``, on the grid ``anchor + k * seconds`` (anchor default: the Unix epoch, UTC).

    With the default anchor, ``Interval(60)`` starts on each whole minute and
    ``Interval(3600)`` on each whole hour (UTC).

    Raises:
        ValueError: ``seconds`` is not a positive number.
    """

    def __init__(self, seconds: float | timedelta, anchor: datetime | None = None) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ValueError(f"interval must be a positive number of seconds or a timedelta, not {seconds!r}")
        self.seconds = float(value)
        self.anchor = (anchor if anchor is not None else datetime(1970, 1, 1, tzinfo=UTC)).timestamp()

    def next_after(self, moment: float) -> float:
        steps = math.floor((moment - self.anchor) / self.seconds) + 1
        due = self.anchor + steps * self.seconds
        return due if due > moment else due + self.seconds

    def describe(self) -> str:
        return f"every {self.seconds:g} s"


class Cron(Schedule):
    """A cron expression (five fields, or six with seconds), in ``timezone`` (default: local time).

    Raises:
        ValueError: The expression is not valid cron, or the time zone is unknown.
        ImportError: cronsim is not installed (``pip install 'taskyard[cron]'``).
    """

    def __init__(self, expression: str, timezone: str | None = None) -> None:
        try:
            import cronsim
        except ImportError:
            raise ImportError("cron schedules need cronsim: pip install cronsim (or the cron extra of taskyard)") from None
        if not isinstance(expression, str):
            raise ValueError(f"cron must be a cron expression string, not {expression!r}")
        self.expression = expression.strip()
        self.timezone = timezone
        self._tz: Any = None
        if timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                self._tz = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {timezone!r} for cron {expression!r}") from None
        try:
            cronsim.CronSim(self.expression, datetime.now(UTC))
        except cronsim.CronSimError as exc:
            raise ValueError(f"cron {expression!r} is not a valid cron expression: {exc}") from None

    def next_after(self, moment: float) -> float:
        import cronsim

        start = datetime.fromtimestamp(moment, self._tz if self._tz is not None else UTC)
        if self._tz is None:
            start = start.astimezone()  # local time, as cron means
        return next(cronsim.CronSim(self.expression, start)).timestamp()

    def describe(self) -> str:
        return f"cron {self.expression!r}" + (f" ({self.timezone})" if self.timezone else "")


def make_schedules(interval: Any = None, cron: Any = None) -> list[Schedule]:
    """The schedules of ``interval=`` (seconds, a timedelta, or several) and ``cron=`` (one or several).

    Raises:
        ValueError: Both are given (as in Prefect: one kind per deployment), or a value is bad.
    """
    if interval is not None and cron is not None:
        raise ValueError("give interval= or cron=, not both (one kind of schedule per deployment)")
    if interval is not None:
        values = list(interval) if isinstance(interval, (list, tuple, set)) else [interval]
        return [Interval(v) for v in values]
    if cron is not None:
        values = list(cron) if isinstance(cron, (list, tuple, set)) else [cron]
        return [Cron(v) for v in values]
    return []
