"""How records are written: parameters as JSON, task runs as compact chunks.

A chunk holds many task runs *by column* (:data:`TASK_FIELDS`): one list
per field, and a column whose values are all equal (the task name of a map,
``Completed``, a run count of 1) as that one value. Format 2 adds two
columns made from others: a map's indices counting up from a first one, and
default run names (a prefix and the first 8 characters of each run's id); and
ids of 32 hex digits concatenated without separators. Format 3 adds a lane's
ids as the two numbers they are made from (taskyard.runids). It is a pickle
(protocol 5) of plain lists and tuples, read back by an unpickler that
refuses every global, so a chunk can only ever yield strings, numbers, None
and tuples — never run code. Building it costs a few list comprehensions
and one C-level pickle per chunk, not a SQL row per task run.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from array import array
from collections.abc import Mapping
from typing import Any

from taskyard.runids import stepped_ids

__all__ = (
    "TASK_FIELDS", "CHUNK_FORMAT", "SEP", "squeeze", "json_safe", "dumps_json", "float_column", "encode_chunk", "decode_chunk",
)  # fmt: skip

# The fields of one task-run tuple in a chunk, in order.
TASK_FIELDS = (
    "id", "name", "task_name", "map_index", "tags", "submitted", "state_type", "state_name",
    "state_message", "run_count", "start_time", "end_time", "result_location", "history",
)  # fmt: skip
# 1: columns as lists, ("=", value) or (SEP, joined strings); 2 adds ("r", first map
# index), ("n", name prefix) and ("w", ids concatenated); 3 adds ("s", (base, first
# index)), a lane's stepped ids, and ("d", bytes), floats as an array's bytes.
# A reader of a format reads the formats before it.
CHUNK_FORMAT = 3
_MAX_REPR = 200
# The type of the states the engine and the runners make, by name: a chunk
# whose states all have one of these names does not store their types.
TYPE_OF_NAME = {
    "Completed": "COMPLETED", "Cached": "COMPLETED", "Failed": "FAILED", "TimedOut": "FAILED",
    "NotReady": "FAILED", "Crashed": "CRASHED", "Cancelled": "CANCELLED", "Pending": "PENDING",
    "Scheduled": "SCHEDULED", "Running": "RUNNING",
}  # fmt: skip
SEP = "\x1f"  # joins a column of strings: one string pickles faster than thousands
_NAME_COLUMN = TASK_FIELDS.index("state_name")
_ID_COLUMN = TASK_FIELDS.index("id")
_TYPE_COLUMN = TASK_FIELDS.index("state_type")


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data; what JSON cannot hold becomes a short repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, str) and len(value) > 10 * _MAX_REPR:
            return value[: 10 * _MAX_REPR] + "…"
        return value
    if depth < 4 and isinstance(value, Mapping) and len(value) <= 100 and all(isinstance(k, str) for k in value):
        return {k: json_safe(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)) and len(value) <= 100:
        return [json_safe(v, depth + 1) for v in value]
    return _short_repr(value)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 1] + "…"


def dumps_json(value: Any) -> str:
    """Compact JSON of :func:`json_safe` data."""
    return json.dumps(json_safe(value), separators=(",", ":"))


def squeeze(column: list[Any] | tuple[str, Any] | None) -> Any:
    """A column as stored: one value if all are equal, strings joined, or the list as it is."""
    if column is None or type(column) is tuple:  # state types implied by the names; or squeezed already
        return column
    first = column[0]
    if column.count(first) == len(column):
        return ("=", first)
    if type(first) is str:
        try:
            joined = SEP.join(column)
        except TypeError:  # not all strings
            return column
        if joined.count(SEP) == len(column) - 1:
            return (SEP, joined)
    return column


def _expand(column: Any, count: int, before: list[list[Any]]) -> list[Any]:
    """A column as a list; ``before`` holds the columns before it, expanded already."""
    if column is None:  # state types: filled in from the names
        return []
    if isinstance(column, tuple):
        marker, value = column
        if marker == "=":
            return [value] * count
        if marker == "r":
            return list(range(value, value + count))
        if marker == "w":  # ids of 32 hex digits, concatenated
            return [value[at : at + 32] for at in range(0, len(value), 32)]
        if marker == "s":  # a lane's ids: its base and the first run's index (taskyard.runids)
            base, first = value
            return stepped_ids(base, first, count)
        if marker == "d":  # floats, 8 bytes each, little-endian
            floats = array("d", value)
            if sys.byteorder == "big":
                floats.byteswap()
            return floats.tolist()
        if marker == "n":  # the id column comes first
            return [value + run_id[:8] for run_id in before[_ID_COLUMN]]
        return value.split(SEP)  # type: ignore[no-any-return]
    return column  # type: ignore[no-any-return]


def float_column(values: array[float]) -> tuple[str, bytes]:
    """A column of floats (no None) as stored: their bytes, little-endian, not a float object each."""
    if sys.byteorder == "big":
        values = array("d", values)
        values.byteswap()
    return ("d", values.tobytes())


def encode_chunk(count: int, columns: list[Any], *, squeezed: bool = False) -> bytes:
    """The bytes of one chunk: ``count`` task runs given as one list per field of :data:`TASK_FIELDS`.

    A column may also be given squeezed already: ``("=", value)`` (all equal),
    ``(SEP, joined)`` (strings without SEP, joined by it), ``("r", first)``
    (map indices ``first, first + 1, …``), ``("n", prefix)`` (run names
    ``prefix + id[:8]``), ``("w", ids)`` (ids of 32 characters, concatenated)
    or ``("s", (base, first))`` (a lane's ids, :func:`taskyard.runids.stepped_ids`),
    ``("d", data)`` (floats, :func:`float_column`);
    and ``state_type`` as None when every state name is
    one of :data:`TYPE_OF_NAME`. ``squeezed=True`` stores lists as given
    (a caller that knows which of its columns are worth squeezing).
    """
    return pickle.dumps((count, columns if squeezed else [squeeze(c) for c in columns]), protocol=5)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a run-store chunk holds only plain data, not {module}.{name}")


def decode_chunk(data: bytes) -> list[tuple[Any, ...]]:
    """The task runs of one chunk, as tuples in the order of :data:`TASK_FIELDS`."""
    count, columns = _PlainUnpickler(io.BytesIO(data)).load()
    full: list[list[Any]] = []
    for column in columns:
        full.append(_expand(column, count, full))
    if columns[_TYPE_COLUMN] is None:
        full[_TYPE_COLUMN] = [TYPE_OF_NAME[name] for name in full[_NAME_COLUMN]]
    return list(zip(*full, strict=True))
