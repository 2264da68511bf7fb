"""``taskyard runs``: list, show, read results of, cancel, rename and read the logs of recorded runs.

Every command reads the store of TASKYARD_HOME through :mod:`taskyard.runs`.
A run is named by its id or a unique prefix of it. Tables use rich on a
terminal and plain text otherwise; ``--json`` prints data for scripts.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click

__all__ = ("runs",)


class RunsError(click.ClickException):
    """A mistake in what was asked (unknown run, bad option); exit code 2."""

    exit_code = 2


@contextmanager
def _user_errors() -> Iterator[None]:
    from taskyard.exceptions import RunError, RunNotFound

    try:
        yield
    except (RunNotFound, ValueError, TypeError, TimeoutError) as exc:
        raise RunsError(str(exc)) from None
    except RunError as exc:  # a result that cannot be given: not persisted, or the run failed
        raise click.ClickException(str(exc)) from None


@click.group()
def runs() -> None:
    """Inspect and control recorded flow runs."""


# -- formatting ------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return str(timedelta(seconds=round(seconds)))


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{name}:{n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        click.echo(title)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _state_json(state: Any) -> dict[str, Any]:
    return {"type": state.type.value, "name": state.name, "message": state.message, "timestamp": state.timestamp.isoformat()}


def _task_run_json(task_run: Any) -> dict[str, Any]:
    data: dict[str, Any] = task_run.model_dump(mode="json", exclude={"state", "state_history"})
    data["state"] = _state_json(task_run.state)
    data["state_history"] = [_state_json(s) for s in task_run.state_history]
    return data


def _flow_run_json(run: Any, details: bool) -> dict[str, Any]:
    data: dict[str, Any] = run.model_dump(mode="json", exclude={"state", "state_history", "task_runs"})
    data["state"] = _state_json(run.state)
    if details:
        data["state_history"] = [_state_json(s) for s in run.state_history]
        data["task_runs"] = [_task_run_json(t) for t in run.task_runs]
    return data


def _since(text: str | None) -> datetime | None:
    """``2026-12-01``, ``2026-12-01T10:00``, or an age such as ``90m``, ``2h``, ``3d``."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RunsError(f"--since {text!r}: give a date/time (2026-12-01T10:00) or an age (30m, 2h, 3d)") from None
    return moment if moment.tzinfo else moment.astimezone()


# -- commands --------------------------------------------------------------------------------


@runs.command("ls")
@click.option("--flow", "flow_name", metavar="NAME", help="Only runs of this flow.")
@click.option("--state", metavar="STATE", help="Only runs in this state (a type or name: failed, Crashed, ...).")
@click.option("--since", metavar="WHEN", help="Only runs created since then (ISO time, or an age: 30m, 2h, 3d).")
@click.option("--deployment", metavar="FLOW/NAME", help="Only runs of this served deployment.")
@click.option("--limit", default=100, show_default=True, help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(flow_name: str | None, state: str | None, since: str | None, deployment: str | None, limit: int, as_json: bool) -> None:
    """List flow runs, newest first (DEPLOYMENT: the served deployment a run came from)."""
    from taskyard.runs import list_flow_runs

    with _user_errors():
        found = list_flow_runs(flow_name=flow_name, state=state, since=_since(since), limit=limit, deployment=deployment)
    if as_json:
        _echo_json([_flow_run_json(r, details=False) for r in found])
        return
    rows = [
        [r.id[:8], r.name, r.flow_name, r.deployment or "-", r.state.name, _when(r.start_time), _duration(r.duration), _counts(r.task_counts)]
        for r in found
    ]
    _table(None, ["ID", "NAME", "FLOW", "DEPLOYMENT", "STATE", "START", "DURATION", "TASK RUNS"], rows)


@runs.command()
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every task run).")
def show(run_id: str, as_json: bool) -> None:
    """Show a flow run: its states, its task runs and a timeline."""
    from taskyard.runs import read_flow_run

    with _user_errors():
        run = read_flow_run(run_id)
    if as_json:
        _echo_json(_flow_run_json(run, details=True))
        return
    click.echo(f"{run.name}  ({run.id})")
    click.echo(f"flow {run.flow_name}  on {run.task_runner or '-'}  state {run.state.name}" + (f": {run.state.message}" if run.state.message else ""))
    if run.deployment:
        click.echo(f"deployment {run.deployment}")
    click.echo(f"started {_when(run.start_time)}  ran {_duration(run.duration)}  parameters {json.dumps(run.parameters)}")
    if run.tags:
        click.echo(f"tags {', '.join(run.tags)}")
    if run.parent_flow_run_id or run.parent_task_run_id:
        click.echo(f"parent flow run {run.parent_flow_run_id or '-'}  parent task run {run.parent_task_run_id or '-'}")
    click.echo("")
    origin = run.start_time or run.created
    click.echo("states:")
    for state in run.state_history:
        offset = (state.timestamp - origin).total_seconds() if origin else 0.0
        click.echo(f"  {offset:+9.3f} s  {state.name}" + (f": {state.message}" if state.message else ""))
    click.echo("")
    rows = [
        [t.name, t.task_name, str(t.map_index) if t.map_index >= 0 else "", t.state.name, str(t.run_count), _duration(t.duration)]
        for t in run.task_runs
    ]
    _table(f"{len(run.task_runs)} task runs ({_counts(run.task_counts)})", ["TASK RUN", "TASK", "INDEX", "STATE", "RUNS", "DURATION"], rows)
    if run.task_runs and origin is not None:
        click.echo("")
        click.echo("timeline:")
        for line in _timeline(run, origin):
            click.echo(line)


def _timeline(run: Any, origin: datetime, width: int = 40, most: int = 30) -> list[str]:
    """One bar per task run (start to end) on the flow run's time axis; long runs are sampled."""
    end = run.end_time or max((t.end_time for t in run.task_runs if t.end_time), default=origin)
    span = max((end - origin).total_seconds(), 1e-6)
    shown = run.task_runs if len(run.task_runs) <= most else run.task_runs[:: max(1, len(run.task_runs) // most)][:most]
    label = max(len(t.name) for t in shown)
    lines = []
    for t in shown:
        start = t.start_time or t.end_time or origin
        stop = t.end_time or start
        a = min(width - 1, int((start - origin).total_seconds() / span * width))
        b = max(a + 1, min(width, round((stop - origin).total_seconds() / span * width)))
        mark = "#" if t.state.is_completed() else "x"
        lines.append(f"  {t.name.ljust(label)} |{' ' * a}{mark * (b - a)}{' ' * (width - b)}| {t.state.name}")
    if len(shown) < len(run.task_runs):
        lines.append(f"  ({len(shown)} of {len(run.task_runs)} task runs shown)")
    lines.append(f"  {' ' * label} 0{' ' * (width - 1)}{_duration(span)}")
    return lines


@runs.command()
@click.argument("run_id", metavar="ID")
@click.argument("task_name", metavar="TASK")
@click.option("--index", "map_index", default=-1, show_default=True, help="Map index (-1: every run of a mapped task).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def result(run_id: str, task_name: str, map_index: int, as_json: bool) -> None:
    """Print the persisted result of a task run of a flow run."""
    from taskyard.runs import get_task_run_result

    with _user_errors():
        value = get_task_run_result(run_id, task_name, map_index, timeout=0)
    if as_json:
        _echo_json(value)
    else:
        click.echo(value if isinstance(value, str) else repr(value))


@runs.command()
@click.argument("run_id", metavar="ID")
def cancel(run_id: str) -> None:
    """Cancel a flow run (it stops within seconds)."""
    from taskyard.runs import cancel_flow_run

    with _user_errors():
        run = cancel_flow_run(run_id)
    if run.state.name == "Cancelling":
        click.echo(f"cancelling {run.name} ({run.id}); its process stops it within seconds")
    elif run.state.is_cancelled():
        click.echo(f"cancelled {run.name} ({run.id})")
    else:
        click.echo(f"{run.name} ({run.id}) is already {run.state.name}; nothing to cancel")


@runs.command()
@click.argument("run_id", metavar="ID")
@click.argument("name")
def rename(run_id: str, name: str) -> None:
    """Give a flow run a new name."""
    from taskyard.runs import rename_flow_run

    with _user_errors():
        rename_flow_run(run_id, name)
    click.echo(f"renamed {run_id} to {name}")


@runs.command()
@click.argument("run_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until the run is final.")
def logs(run_id: str, follow: bool) -> None:
    """Print the log records recorded for a flow run."""
    from taskyard.runs.logs import read_logs

    seen = 0
    while True:
        with _user_errors():
            records, final = read_logs(run_id, after=seen)
        for record in records:
            seen = record.seq
            level = _LEVELS.get(record.level, str(record.level))
            click.echo(f"{_when(record.timestamp)} {level:<8} {record.logger}: {record.message}")
        if not follow or final:
            return
        time.sleep(0.5)


_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
