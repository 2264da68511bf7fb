"""The ``taskyard`` command line."""

from taskyard.cli.main import main

__all__ = ("main",)
