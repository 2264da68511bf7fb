"""Loading a flow (or any object) from ``path/to/file.py:name`` or ``package.module:name``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ("load_object", "load_flow", "FlowImportError")


class FlowImportError(ImportError):
    """The file or module exists but raised while it was imported; ``__cause__`` is what it raised."""


def load_object(ref: str) -> Any:
    """Import the object ``ref`` names.

    A module is looked up in the current directory first, then on
    ``sys.path`` (the directory is added to ``sys.path`` for good, so worker
    processes find the module too).

    Raises:
        ValueError: ``ref`` is not of the form ``file.py:name`` or ``module:name``.
        LookupError: The file, module or name does not exist.
        FlowImportError: The file or module raised while it was imported.
    """
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"{ref!r} is not FILE.py:NAME or MODULE:NAME")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise LookupError(f"no such file: {target}")
        module_name = f"__taskyard_flow_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise FlowImportError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
        # Worker processes cannot import a module loaded from a path under a
        # made-up name: ship its functions by value instead.
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    else:
        module = _import_module(target)
    try:
        return getattr(module, name)
    except AttributeError:
        raise LookupError(f"{target} has no attribute {name!r}") from None


def load_flow(ref: str) -> Any:
    """Like :func:`load_object`, and check that the object is a flow."""
    from taskyard.flows import Flow

    obj = load_object(ref)
    if not isinstance(obj, Flow):
        raise TypeError(f"{ref} is {type(obj).__name__}, not a @flow")
    return obj


def _import_module(target: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        # The module itself is missing, or something it imports is.
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise LookupError(f"no module named {target!r} (looked in {cwd} and on sys.path)") from exc
        raise FlowImportError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise FlowImportError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
