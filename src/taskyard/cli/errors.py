"""How the commands fail: a one-line message on stderr and an exit code, never a traceback."""

from __future__ import annotations

import click

__all__ = ("UserError", "RunFailed")


class UserError(click.ClickException):
    """A mistake in what the user asked for; exit code 2."""

    exit_code = 2


class RunFailed(click.ClickException):
    """The flow run ended badly; exit code 1."""

    exit_code = 1
