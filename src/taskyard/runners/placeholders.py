"""Large values every call of a map shares, shipped once: placeholders in the calls (cluster backends).

The runner finds the parameters whose value is the same large object in
every call (:func:`find_shared`), ships each value once (``client.scatter``,
``ray.put``), and sends calls that carry a :class:`SharedArg` in its place
(:func:`with_placeholders`); on the worker,
:func:`taskyard.runners.toolkit.run_on_worker` puts the values back. Part of
the runner toolkit (:mod:`taskyard.runners.toolkit` re-exports these).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taskyard.runners.base import TaskCall

__all__ = ("SharedArg", "find_shared", "estimate_size", "with_placeholders")

_SMALL = frozenset({int, float, bool, complex, type(None)})


class SharedArg:
    """Stands in a call's parameters for the shared value at ``index`` (shipped once)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[type[SharedArg], tuple[int]]:
        return SharedArg, (self.index,)

    def __repr__(self) -> str:
        return f"SharedArg({self.index})"


def find_shared(calls: Sequence[TaskCall[Any]], size_of: Callable[[Any], int], min_bytes: int) -> list[str]:
    """The parameters whose value is the same object in every call and at least ``min_bytes``.

    Args:
        calls: The calls of one map (fewer than two share nothing).
        size_of: The backend's size estimate (``dask.sizeof``, a pickle length).
        min_bytes: Smaller values travel inside the calls, as usual.
    """
    if len(calls) < 2:
        return []
    first = calls[0].parameters
    names = []
    for name, value in first.items():
        if type(value) in _SMALL:
            continue
        if all(c.parameters.get(name, first) is value for c in calls) and size_of(value) >= min_bytes:
            names.append(name)
    return names


def estimate_size(value: Any, depth: int = 0) -> int:
    """A cheap size estimate in bytes, without pickling (``nbytes``, lengths, sampled containers)."""
    if isinstance(value, bytes | bytearray | str | memoryview):
        return len(value)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    size = sys.getsizeof(value)
    if depth > 3:
        return size
    if isinstance(value, list | tuple | set | frozenset):
        items = list(itertools.islice(value, 100))
        if items:
            size += sum(estimate_size(i, depth + 1) for i in items) * len(value) // len(items)
    elif isinstance(value, dict):
        pairs = list(itertools.islice(value.items(), 100))
        if pairs:
            per = sum(estimate_size(k, depth + 1) + estimate_size(v, depth + 1) for k, v in pairs)
            size += per * len(value) // len(pairs)
    elif hasattr(value, "__dict__"):
        size += estimate_size(vars(value), depth + 1)
    return size


def with_placeholders(calls: Sequence[TaskCall[Any]], names: Sequence[str]) -> list[TaskCall[Any]]:
    """New calls with parameter ``names[i]`` replaced by ``SharedArg(i)`` (the originals are untouched)."""
    swap = {name: SharedArg(i) for i, name in enumerate(names)}
    return [TaskCall(c.task, {**c.parameters, **swap}, c.task_run, c.flow_run, c.upstreams) for c in calls]
