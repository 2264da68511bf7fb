"""A call on its way through the Dask cluster, and the Dask options it is submitted with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from taskyard.runners.base import TaskCall
from taskyard_dask.options import current_dask_options, options_for_tags

if TYPE_CHECKING:
    from taskyard_dask.reading import DaskTaskFuture

__all__ = ("Entry", "options_for", "submit_kwargs", "annotated")

_SUBMIT_OPTIONS = ("resources", "priority", "workers", "allow_other_workers")


class Entry:
    """A call on its way through the cluster (kept for resubmission), and what its losses taught."""

    __slots__ = ("call", "future", "options", "shared", "native", "losses", "key", "placements", "orphaned", "marked", "keys")

    def __init__(self, call: TaskCall[Any], future: DaskTaskFuture, options: Mapping[str, Any], shared: tuple[Any, ...]) -> None:
        self.call = call
        self.future = future
        self.options = options
        self.shared = shared
        self.native: Any = None
        self.losses = 0  # attempts lost with the worker running it
        self.placements = 0  # placed again after an upstream was lost
        self.orphaned = 0  # workers that died holding it before it started
        self.marked = False  # its start is reported as it happens (taskyard_dask.losses)
        self.keys = 0
        self.key = f"{call.task_run.task_name}-{call.task_run.id}"

    def rekey(self, why: str) -> None:
        """A new Dask key for placing it again: Dask answers a known key with the future it already has."""
        self.keys += 1
        self.key = f"{self.call.task_run.task_name}-{self.call.task_run.id}-{why}{self.keys}"


def options_for(call: TaskCall[Any]) -> Mapping[str, Any]:
    """The Dask options of ``call``: ``dask_options`` in effect, then those of its tags."""
    base = current_dask_options()
    tags = call.task_run.tags
    return options_for_tags(tags, base) if tags else base


def submit_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that are keyword arguments of ``client.submit`` / ``client.map``."""
    return {k: options[k] for k in _SUBMIT_OPTIONS if k in options}


@contextlib.contextmanager
def annotated(options: Mapping[str, Any]) -> Iterator[None]:
    """Apply the options' Dask annotations to what is submitted inside."""
    annotations = options.get("annotations")
    if not annotations:
        yield
        return
    import dask

    with dask.annotate(**annotations):  # type: ignore[attr-defined]
        yield
