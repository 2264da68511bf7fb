"""Per-submission options in nested ``with`` blocks: what ``dask_options`` and ``ray_options`` are made of.

::

    with backend_options(resources={"GPU": 1}, priority=5):      # layer 1
        with backend_options(resources={"big": 1}, priority=9):  # layer 2
            task.submit(...)  # the runner reads {"resources": {"GPU": 1, "big": 1}, "priority": 9}

A :class:`LayeredOptions` keeps the options in force in a
:mod:`contextvars` variable, so each thread and task sees its own, and a
runner that places calls in the flow's thread (as the dispatcher hands them
over) reads exactly the options around ``submit``/``map``. Inner values
win; the keys named as ``merged`` (mappings) are merged key by key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

__all__ = ("LayeredOptions",)

_NONE: Mapping[str, Any] = MappingProxyType({})


class LayeredOptions:
    """Options set by nested ``with`` blocks, read where calls are submitted.

    Args:
        name: The context variable's name (for debugging).
        merged: The keys whose values are mappings merged with the outer
            block's, key by key, instead of replacing them.
    """

    def __init__(self, name: str, merged: Collection[str] = ()) -> None:
        self._var: ContextVar[Mapping[str, Any]] = ContextVar(name, default=_NONE)
        self._merged = frozenset(merged)

    def current(self) -> Mapping[str, Any]:
        """The options of the enclosing blocks (empty outside any); read-only."""
        return self._var.get()

    @contextlib.contextmanager
    def layer(self, given: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        """A block with ``given`` over the options in force; None values leave an option as it is.

        Yields the merged options in force inside the block.
        """
        outer = self._var.get()
        merged = dict(outer)
        for key, value in given.items():
            if value is None:
                continue
            merged[key] = {**outer.get(key, {}), **value} if key in self._merged else value
        view = MappingProxyType(merged)
        token = self._var.set(view)
        try:
            yield view
        finally:
            self._var.reset(token)
