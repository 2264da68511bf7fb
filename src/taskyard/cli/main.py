"""``taskyard`` commands: run, runners, bench.

Commands parse arguments and call the public API. A user mistake prints one
line to stderr and exits non-zero (a :class:`click.ClickException`), never a
traceback.
"""

from __future__ import annotations

import json
from typing import Any

import click

from taskyard.cli.runs import runs as runs_commands

__all__ = ("main", "cli")


class UserError(click.ClickException):
    """A mistake in what the user asked for; exit code 2."""

    exit_code = 2


class RunFailed(click.ClickException):
    """The flow run ended badly; exit code 1."""

    exit_code = 1


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` → ``(k, v)``; v is parsed as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"--param {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


@click.group()
@click.version_option(package_name="taskyard")
def cli() -> None:
    """Run flows, list task runners and benchmark them."""


@cli.command()
@click.argument("flow_ref", metavar="FILE.py:FLOW")
@click.option("--runner", "runner_name", metavar="NAME", help="Run on this task runner (overrides the flow's own).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A flow parameter (JSON or a string).")
def run(flow_ref: str, runner_name: str | None, params: tuple[str, ...]) -> None:
    """Run a flow and print its result."""
    import contextlib

    from taskyard.exceptions import ParameterValidationError, RunnerNotFound
    from taskyard.flows import task_runner_override
    from taskyard.loading import load_flow

    try:
        flow_obj = load_flow(flow_ref)
    except (ValueError, LookupError, TypeError) as exc:
        raise UserError(str(exc)) from None
    kwargs = dict(parse_param(p) for p in params)
    # A parameter annotated `str` takes the text as given (`--param label=123`).
    hints = _hints(flow_obj.fn)
    for text in params:
        key, _, raw = text.partition("=")
        if hints.get(key) is str:
            kwargs[key] = raw
    unknown = set(kwargs) - set(flow_obj.binder.all_names)
    if unknown and flow_obj.binder.simple:
        raise UserError(f"flow {flow_obj.name!r} has no parameter {sorted(unknown)[0]!r} (parameters: {', '.join(flow_obj.binder.names) or 'none'})")
    from taskyard.dispatch import new_run_id
    from taskyard.flowrecord import preset_run

    run_id = new_run_id()
    token = preset_run.set((run_id, None))
    try:
        override = task_runner_override(runner_name) if runner_name else contextlib.nullcontext()
        with override:
            state = flow_obj(**kwargs, return_state=True)
    except (RunnerNotFound, ParameterValidationError, TypeError) as exc:
        raise UserError(str(exc)) from None
    finally:
        preset_run.reset(token)
    click.echo(f"flow run {run_id}", err=True)  # stdout keeps only the result, for scripts
    if not state.is_completed():
        raise RunFailed(f"flow run ended {state.name}: {state.message}")
    result = state.result()
    if result is not None:
        click.echo(result if isinstance(result, str) else repr(result))


def _hints(fn: Any) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


@cli.command()
def runners() -> None:
    """List the registered task runners and whether each is installed."""
    from taskyard.runners.registry import available_runners

    for info in available_runners():
        status = "installed" if info.installed else f"not installed ({info.hint})" if info.hint else "not importable"
        click.echo(f"{info.name:<12} {status:<40} {info.target}")


def _add_bench() -> None:
    try:
        from taskyard.cli.bench import bench
    except ImportError:  # the bench module is optional in a trimmed install
        return
    cli.add_command(bench)


_add_bench()
cli.add_command(runs_commands)


def main() -> None:
    """Entry point of the ``taskyard`` script."""
    cli(prog_name="taskyard")


if __name__ == "__main__":
    main()
