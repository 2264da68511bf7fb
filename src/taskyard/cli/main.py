"""``taskyard`` commands: run, runners, bench.

Commands parse arguments and call the public API. A user mistake prints one
line to stderr and exits non-zero (a :class:`click.ClickException`), never a
traceback.
"""

from __future__ import annotations

import click

from taskyard.cli.errors import RunFailed, UserError
from taskyard.cli.run import parse_param, run
from taskyard.cli.runs import runs as runs_commands
from taskyard.cli.worker import worker

__all__ = ("main", "cli", "UserError", "RunFailed", "parse_param")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskyard")
def cli() -> None:
    """Run flows, list task runners, serve deferred task runs and benchmark them."""


cli.add_command(run)


@cli.command()
def runners() -> None:
    """List the registered task runners and whether each is installed.

    A runner that is not installed shows the command that installs it, to be
    run in the taskyard repository (the plugins are not on a package index).
    """
    from taskyard.runners.registry import WHERE, available_runners

    for info in available_runners():
        if info.installed:
            click.echo(f"{info.name:<12} installed      {info.target}")
        elif info.hint:
            click.echo(f"{info.name:<12} not installed  {WHERE}: {info.hint}")
        else:
            click.echo(f"{info.name:<12} not importable {info.target}")


def _add_bench() -> None:
    try:
        from taskyard.cli.bench import bench
    except ImportError:  # the bench module is optional in a trimmed install
        return
    cli.add_command(bench)


_add_bench()
cli.add_command(runs_commands)
cli.add_command(worker)


def main() -> None:
    """Entry point of the ``taskyard`` script."""
    cli(prog_name="taskyard")


if __name__ == "__main__":
    main()
