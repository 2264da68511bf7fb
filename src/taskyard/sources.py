"""Importing an object from ``path/to/file.py:name`` or ``package.module:name``.

The one loader behind ``taskyard run FILE.py:FLOW``, ``taskyard.loading``
and ``Flow.from_source``. It sits low in the layers (it imports nothing of
taskyard), so the flow module can use it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ("import_object", "FlowImportError")


class FlowImportError(ImportError):
    """The file or module exists but raised while it was imported; ``__cause__`` is what it raised."""


def import_object(ref: str, base: str | os.PathLike[str] | None = None) -> Any:
    """Import the object ``ref`` names; a relative file path is taken from ``base``.

    A module loaded from a file is registered with cloudpickle to pickle by
    value, since worker processes cannot import it under its made-up name.

    Raises:
        ValueError: ``ref`` is not of the form ``file.py:name`` or ``module:name``.
        LookupError: The file, module or name does not exist.
        FlowImportError: The file or module raised while it was imported.
    """
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"{ref!r} is not FILE.py:NAME or MODULE:NAME")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = (Path(base) / target if base is not None else Path(target)).resolve()
        if not path.is_file():
            raise LookupError(f"no such file: {path if base is not None else target}")
        module = _exec_file(path)
    elif base is not None:
        module = _import_from(target, Path(base).resolve())
    else:
        module = _import_module(target)
    try:
        return getattr(module, name)
    except AttributeError:
        raise LookupError(f"{target} has no attribute {name!r}") from None


def _exec_file(path: Path) -> Any:
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
        raise FlowImportError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _import_from(dotted: str, base: Path) -> Any:
    """Import ``dotted`` with ``base`` first on ``sys.path`` (left there: its code may import more)."""
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise LookupError(f"no module named {dotted!r} under {base}") from exc


def _import_module(target: str) -> Any:
    """Import ``target`` as ``python -m`` would: the current directory first."""
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
