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


class _Record:
    """What an entry's losses taught: made on its first loss or new key (most entries never have one)."""

    __slots__ = ("losses", "placements", "orphaned", "marked", "keys", "why")

    def __init__(self) -> None:
        self.losses = 0  # attempts lost with the worker running it
        self.placements = 0  # placed again after an upstream was lost
        self.orphaned = 0  # workers that died holding it before it started
        self.marked = False  # its start is reported as it happens (taskyard_dask.losses)
        self.keys = 0  # new keys it was given
        self.why = ""  # what its current key adds to the first one


_FRESH = _Record()


class _Learned:
    """An Entry attribute kept in its _Record, which the first write makes."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, entry: Entry | None, owner: type | None = None) -> Any:
        if entry is None:
            return self
        return getattr(entry._record or _FRESH, self.name)

    def __set__(self, entry: Entry, value: Any) -> None:
        if entry._record is None:
            entry._record = _Record()
        setattr(entry._record, self.name, value)


class Entry:
    """A call on its way through the cluster (kept for resubmission), and what its losses taught.

    A million-call map queues a million entries at once, so an entry is
    five references and an empty slot: what losses teach lives in a record
    made at the first loss, and its Dask key is made when asked for.
    """

    __slots__ = ("call", "future", "options", "shared", "native", "_record")

    losses = _Learned()
    placements = _Learned()
    orphaned = _Learned()
    marked = _Learned()
    keys = _Learned()

    def __init__(self, call: TaskCall[Any], future: DaskTaskFuture, options: Mapping[str, Any], shared: tuple[Any, ...]) -> None:
        self.call = call
        self.future = future
        self.options = options
        self.shared = shared
        self.native: Any = None
        self._record: _Record | None = None

    @property
    def key(self) -> str:
        """The Dask key it is placed under alone (a batch has a key of its own)."""
        run = self.call.task_run
        why = self._record.why if self._record is not None else ""
        return f"{run.task_name}-{run.id}{why}"

    def rekey(self, why: str) -> None:
        """A new Dask key for placing it again: Dask answers a known key with the future it already has."""
        self.keys += 1
        self._record.why = f"-{why}{self.keys}"  # type: ignore[union-attr]  # made by the line above


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
