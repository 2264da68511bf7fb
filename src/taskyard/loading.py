"""Loading a flow (or any object) from ``path/to/file.py:name`` or ``package.module:name``."""

from __future__ import annotations

from typing import Any

from taskyard.sources import FlowImportError, import_object

__all__ = ("load_object", "load_flow", "FlowImportError")


def load_object(ref: str) -> Any:
    """Import the object ``ref`` names; a module name is looked for in the current directory first.

    Raises:
        ValueError: ``ref`` is not of the form ``file.py:name`` or ``module:name``.
        LookupError: The file, module or name does not exist.
        FlowImportError: The file or module raised while it was imported.
    """
    return import_object(ref)


def load_flow(ref: str) -> Any:
    """Like :func:`load_object`, and check that the object is a flow."""
    from taskyard.flows import Flow

    obj = load_object(ref)
    if not isinstance(obj, Flow):
        raise TypeError(f"{ref} is {type(obj).__name__}, not a @flow")
    return obj
