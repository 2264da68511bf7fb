"""Large arguments shared by many calls, shipped to worker processes once.

A ``map`` that hands the same large object (an unmapped argument, a
constant) to many calls would otherwise pickle it into every batch. Instead
it is pickled once into a file the runner owns, the calls carry a small
:class:`SharedRef`, and each worker process loads the file once and keeps the
object for the next calls that name it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import cloudpickle

from taskyard.engine import TaskCall

__all__ = ("SharedRef", "SharedArguments", "load_shared", "load_static")

# A shared value whose pickle is at least this large goes through a file.
MIN_SHARED_BYTES = 256 * 1024
_SMALL_TYPES = frozenset({int, float, bool, complex, type(None), str})


class SharedRef:
    """Stands in a call's parameters for a value stored in ``path``."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[type[SharedRef], tuple[str]]:
        return SharedRef, (self.path,)


class SharedArguments:
    """The runner's side: finds large shared arguments and writes each once."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._written: dict[int, tuple[Any, SharedRef]] = {}
        self._lock = threading.Lock()

    def replace(self, calls: Sequence[TaskCall[Any]]) -> None:
        """Swap large values that every call shares for references, in place."""
        if len(calls) < 2:
            return
        first = calls[0].parameters
        for name, value in first.items():
            if _small(value):
                continue
            if not all(call.parameters.get(name) is value for call in calls[1:]):
                continue
            ref = self._ref_for(value)
            if ref is None:
                continue
            for call in calls:
                call.parameters = {**call.parameters, name: ref}

    def shared_static(self, static: dict[str, Any]) -> dict[str, Any]:
        """The arguments every call of a lane gets, each large one swapped for a reference."""
        shared = dict(static)
        for name, value in static.items():
            ref = None if _small(value) else self._ref_for(value)
            if ref is not None:
                shared[name] = ref
        return shared

    def _ref_for(self, value: Any) -> SharedRef | None:
        with self._lock:
            known = self._written.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
        data = cloudpickle.dumps(value)
        if len(data) < MIN_SHARED_BYTES:
            return None
        with self._lock:
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="taskyard-shared-")
            fd, path = tempfile.mkstemp(dir=self._dir, suffix=".pkl")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            ref = SharedRef(path)
            # Keep the value alive while its id names it.
            self._written[id(value)] = (value, ref)
            return ref

    def close(self) -> None:
        """Delete the files (the runner is shutting down)."""
        with self._lock:
            directory, self._dir = self._dir, None
            self._written.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


# -- worker side -------------------------------------------------------------------

_cache: OrderedDict[str, Any] = OrderedDict()
_CACHE_SIZE = 4


def load_shared(call: TaskCall[Any]) -> None:
    """Put the values behind a call's SharedRefs back in place (worker side)."""
    call.parameters = load_static(call.parameters)


def load_static(parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with the values behind their SharedRefs in place (worker side; the same dict if none)."""
    refs = {name: value for name, value in parameters.items() if type(value) is SharedRef}
    if not refs:
        return parameters
    params = dict(parameters)
    for name, ref in refs.items():
        value = _cache.get(ref.path, _cache)
        if value is _cache:
            with open(ref.path, "rb") as fh:
                value = cloudpickle.load(fh)
            _cache[ref.path] = value
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(ref.path)
        params[name] = value
    return params


def _small(value: Any) -> bool:
    """Too small to share through a file (decided without pickling it)."""
    return type(value) in _SMALL_TYPES and not (isinstance(value, str) and len(value) > MIN_SHARED_BYTES)
