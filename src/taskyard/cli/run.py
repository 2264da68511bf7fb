"""``taskyard run``: load a flow, run it once, print what it returns.

::

    FLOW reference ── load (file or module; a failing import is the user's error, exit 2)
      │ --param KEY=VALUE (JSON or text) ── checked against the flow's parameters
      ▼
    flow(**params, return_state=True) ── awaited when the flow is async
      │ (--runner NAME overrides the flow's own runner)
      ▼
    Completed → the value on stdout (None: nothing), exit 0
    otherwise → "error: flow run ended Failed: ..." on stderr, exit 1
                (--traceback / -v: the whole traceback, the worker's included)
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import click

from taskyard.cli.errors import RunFailed, UserError

__all__ = ("run", "parse_param")

RUN_EPILOG = """\b
FLOW is either
  FILE.py:FLOW    a flow in a file:   taskyard run flows/etl.py:etl
  MODULE:FLOW     a flow in a module: taskyard run mypkg.flows:etl
                  (looked up from the current directory first, then sys.path)

\b
--param KEY=VALUE can be repeated, one per parameter. VALUE is read as JSON
when it parses and kept as text otherwise, then checked against the flow's
type hints (a parameter annotated str always takes the text as given):
  taskyard run flows.py:etl --param n=3 --param 'names=["a", "b"]' --param label=nightly

\b
Output: the flow's return value on stdout (a str as is, anything else as its
repr); a flow that returns None prints nothing. Logs go to stderr.

\b
Exit codes:
  0  the flow run completed
  1  the flow run ended Failed, Crashed or Cancelled (or could not start)
  2  a usage mistake: an unknown flow, file, module, parameter or runner,
     a bad setting, or a flow file that fails to import
"""


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` → ``(k, v)``; v is parsed as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"--param {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


@click.command(epilog=RUN_EPILOG)
@click.argument("flow_ref", metavar="FLOW")
@click.option("--runner", "runner_name", metavar="NAME", help="Run on this task runner (overrides the flow's own).")
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="A flow parameter, JSON or text; repeat for each."
)
@click.option(
    "--traceback", "-v", "--verbose", "show_traceback", is_flag=True,
    help="On an error, print the full traceback (a task's from its worker too).",
)  # fmt: skip
def run(flow_ref: str, runner_name: str | None, params: tuple[str, ...], show_traceback: bool) -> None:
    """Run a flow once and print what it returns."""
    flow_obj = _load(flow_ref, show_traceback)
    kwargs = _parameters(flow_obj, params)
    state = _run(flow_obj, kwargs, runner_name, show_traceback)
    if not state.is_completed():
        if show_traceback:
            _print_traceback(state.exception())
        hint = "" if show_traceback else " (--traceback shows where)"
        raise RunFailed(f"flow run ended {state.name}: {state.message}{hint}")
    result = state.result()
    if result is not None:
        click.echo(result if isinstance(result, str) else repr(result))


def _load(flow_ref: str, show_traceback: bool) -> Any:
    from taskyard.loading import FlowImportError, load_flow

    try:
        return load_flow(flow_ref)
    except FlowImportError as exc:
        if show_traceback:
            _print_traceback(exc.__cause__)
        raise UserError(f"{exc}{'' if show_traceback else ' (--traceback shows where)'}") from None
    except (ValueError, LookupError, TypeError) as exc:
        raise UserError(str(exc)) from None


def _parameters(flow_obj: Any, params: tuple[str, ...]) -> dict[str, Any]:
    kwargs = dict(parse_param(p) for p in params)
    # A parameter annotated `str` takes the text as given (`--param label=123`).
    hints = _hints(flow_obj.fn)
    for text in params:
        key, _, raw = text.partition("=")
        if hints.get(key) is str:
            kwargs[key] = raw
    unknown = set(kwargs) - set(flow_obj.binder.all_names)
    if unknown and flow_obj.binder.simple:
        names = ", ".join(flow_obj.binder.names) or "none"
        raise UserError(f"flow {flow_obj.name!r} has no parameter {sorted(unknown)[0]!r} (parameters: {names})")
    return kwargs


def _run(flow_obj: Any, kwargs: dict[str, Any], runner_name: str | None, show_traceback: bool) -> Any:
    import asyncio
    import contextlib
    import inspect

    from taskyard.exceptions import ParameterValidationError, RunnerNotFound
    from taskyard.flows import task_runner_override

    from taskyard.dispatch import new_run_id
    from taskyard.flowrecord import preset_run

    run_id = new_run_id()
    token = preset_run.set((run_id, None))
    try:
        override = task_runner_override(runner_name) if runner_name else contextlib.nullcontext()
        with override:
            state = flow_obj(**kwargs, return_state=True)
            if inspect.iscoroutine(state):  # an async flow
                state = asyncio.run(state)
    except (RunnerNotFound, ParameterValidationError, TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:  # the run could not start: a cluster that did not come up, ...
        if show_traceback:
            _print_traceback(exc)
        hint = "" if show_traceback else " (--traceback shows where)"
        raise RunFailed(f"the flow run could not start: {type(exc).__name__}: {exc}{hint}") from None
    finally:
        preset_run.reset(token)
    if isinstance(state.data, ParameterValidationError):  # refused before it started
        raise UserError(str(state.data))
    click.echo(f"flow run {run_id}", err=True)  # stdout keeps only the result, for scripts
    return state


def _print_traceback(exc: BaseException | None) -> None:
    if exc is not None:
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)


def _hints(fn: Any) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}
