"""Prefect's import path for the argument wrappers: ``from taskyard.utilities.annotations import unmapped``.

A re-export of :mod:`taskyard.annotations`.
"""

from taskyard.annotations import allow_failure, quote, unmapped

__all__ = ("unmapped", "allow_failure", "quote")
