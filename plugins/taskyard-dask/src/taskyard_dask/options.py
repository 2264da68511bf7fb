"""Per-submission Dask options: ``with dask_options(resources={"GPU": 1}): task.submit(...)``.

The options live in a :mod:`contextvars` variable that :class:`DaskTaskRunner`
reads when a call is submitted. The dispatcher hands a call to a runner that
resolves dependencies at once, in the flow's thread, so the options in force
around ``submit``/``map`` are the ones the runs get.

Task tags map to Dask too (see :func:`options_for_tags`): a tag
``"dask-resource:GPU=1"`` asks for that worker resource, and every run's tags
travel as the Dask annotation ``taskyard_tags``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from taskyard.runners.base import LayeredOptions

__all__ = ("dask_options", "current_dask_options", "options_for_tags", "RESOURCE_TAG_PREFIX")

RESOURCE_TAG_PREFIX = "dask-resource:"

_KNOWN = frozenset({"resources", "priority", "workers", "allow_other_workers", "annotations"})
_options = LayeredOptions("taskyard_dask_options", merged=("resources", "annotations"))


@contextlib.contextmanager
def dask_options(
    *,
    resources: Mapping[str, float] | None = None,
    priority: int | None = None,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool | None = None,
    annotations: Mapping[str, Any] | None = None,
) -> Iterator[Mapping[str, Any]]:
    """Apply Dask scheduling options to the runs submitted inside the block.

    Blocks nest: inner values win; ``resources`` and ``annotations`` are
    merged key by key. Retries are not a Dask option here: taskyard's own
    ``retries`` apply (on the worker, inside the engine).

    Args:
        resources: Abstract worker resources each run needs (``{"GPU": 1}``);
            runs go only to workers started with those resources.
        priority: Higher runs first when workers are busy.
        workers: Addresses or names of the workers allowed to run them.
        allow_other_workers: With ``workers``, treat it as a preference.
        annotations: Extra Dask annotations (for scheduler plugins).

    Example::

        with dask_options(resources={"GPU": 1}, priority=10):
            train.submit(data)
    """
    given: dict[str, Any] = {
        "resources": resources,
        "priority": priority,
        "workers": workers,
        "allow_other_workers": allow_other_workers,
        "annotations": annotations,
    }
    if workers is not None and not isinstance(workers, str):
        given["workers"] = list(workers)
    with _options.layer(given) as merged:
        yield merged


def current_dask_options() -> Mapping[str, Any]:
    """The options of the enclosing ``dask_options`` blocks (empty outside any)."""
    return _options.current()


def options_for_tags(tags: Iterable[str], base: Mapping[str, Any]) -> dict[str, Any]:
    """Options for a run with ``tags``: ``base`` plus resources named by tags.

    A tag ``dask-resource:NAME=AMOUNT`` (``AMOUNT`` defaults to 1) adds
    ``{NAME: AMOUNT}`` to ``resources`` unless ``base`` already names it.
    Every tag also goes into the annotation ``taskyard_tags`` (sorted).
    """
    options = dict(base)
    tags = sorted(tags)
    if not tags:
        return options
    resources = dict(options.get("resources") or {})
    for tag in tags:
        if tag.startswith(RESOURCE_TAG_PREFIX):
            name, _, amount = tag[len(RESOURCE_TAG_PREFIX) :].partition("=")
            if name:
                resources.setdefault(name, float(amount) if amount else 1)
    if resources:
        options["resources"] = resources
    options["annotations"] = {**(options.get("annotations") or {}), "taskyard_tags": tags}
    return options
