"""Splitting a ``map`` call's arguments into what goes whole to every run and one column per mapped argument.

Iterables map (one item per run); ``unmapped(...)``, ``str``/``bytes``,
dicts, pydantic models and other non-iterables go whole to every run; a
future or a State given as an argument is replaced by its result;
``allow_failure(iterable)`` maps with each item wrapped. ``**kwargs``
map keyword by keyword, like named parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from taskyard.annotations import allow_failure, quote, unmapped
from taskyard.exceptions import MappingLengthMismatch, MappingMissingIterable
from taskyard.futures import TaskFuture
from taskyard.signature import Binder
from taskyard.states import State

__all__ = ("map_columns",)


def map_columns(name: str, binder: Binder, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Sequence[Any]], int]:
    """``(static, mapped, length)`` for a map of task ``name`` over the bound ``params``.

    Raises:
        MappingMissingIterable: No argument is iterable.
        MappingLengthMismatch: The iterables have different lengths.
    """
    static, mapped = _expand(name, binder, params)
    lengths = {key: len(values) for key, values in mapped.items()}
    if not mapped:
        raise MappingMissingIterable(
            f"{name}.map() got no iterable argument to map over ({', '.join(params) or 'no arguments'}); "
            "pass a list, or call submit() for a single run"
        )
    if len(set(lengths.values())) > 1:
        raise _mismatch(name, lengths)
    return static, mapped, next(iter(lengths.values()))


def _mismatch(name: str, lengths: dict[str, int]) -> MappingLengthMismatch:
    shown = ", ".join(f"{key}={n}" for key, n in lengths.items())
    return MappingLengthMismatch(
        f"{name}.map() got iterables of different lengths ({shown}); they must match, "
        "or wrap the one meant for every run in unmapped(...)"
    )


def _expand(name: str, binder: Binder, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Sequence[Any]]]:
    static: dict[str, Any] = {}
    mapped: dict[str, Sequence[Any]] = {}
    var_keyword = binder.var_keyword
    for key, value in params.items():
        if key != var_keyword:
            _split_mapped(key, value, static, mapped)
    if var_keyword is None or var_keyword not in params:
        return static, mapped
    # **kwargs: each keyword maps like a named parameter (its length is
    # checked with theirs); the runs get them back as one dict each.
    kw_static: dict[str, Any] = {}
    kw_mapped: dict[str, Sequence[Any]] = {}
    for key, value in params[var_keyword].items():
        _split_mapped(key, value, kw_static, kw_mapped)
    if not kw_mapped:
        static[var_keyword] = kw_static
        return static, mapped
    lengths = {key: len(column) for key, column in {**mapped, **kw_mapped}.items()}
    if len(set(lengths.values())) > 1:
        raise _mismatch(name, lengths)
    keys = list(kw_mapped)
    mapped[var_keyword] = [
        {**kw_static, **{key: kw_mapped[key][i] for key in keys}} for i in range(next(iter(lengths.values())))
    ]
    return static, mapped


def _split_mapped(name: str, value: Any, static: dict[str, Any], mapped: dict[str, Sequence[Any]]) -> None:
    """Put one map argument in ``static`` (goes whole to every run) or ``mapped`` (one item per run)."""
    if isinstance(value, TaskFuture):
        value = value.result()
    if isinstance(value, State):
        value = value.result()
    if type(value) is unmapped:
        static[name] = value.value
    elif type(value) is allow_failure and _mappable(value.value):
        mapped[name] = [allow_failure(v) for v in value.value]
    elif _mappable(value):
        mapped[name] = value if isinstance(value, (list, tuple, range)) else list(value)
    else:
        static[name] = value


def _mappable(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict, quote, allow_failure)) or not isinstance(value, Iterable):
        return False
    from pydantic import BaseModel

    return not isinstance(value, BaseModel)
