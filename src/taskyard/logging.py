"""Prefect's import path for the run logger: ``from taskyard.logging import get_run_logger``.

A re-export of :mod:`taskyard.logs`. (Inside the package, ``import logging``
is still the standard library's: imports are absolute.)
"""

from taskyard.logs import get_run_logger

__all__ = ("get_run_logger",)
