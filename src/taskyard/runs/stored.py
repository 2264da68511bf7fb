"""Results named by a record's ``result_location``, loaded on demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taskyard.exceptions import MissingResultError

__all__ = ("StoredResult", "load_location", "decode_record")


class StoredResult:
    """The data of a recorded Completed state: ``State.result()`` loads it from where it was persisted."""

    __slots__ = ("location", "what")

    def __init__(self, location: str | None, what: str) -> None:
        self.location = location
        self.what = what

    def __repr__(self) -> str:
        return f"StoredResult({self.location!r})"

    def __taskyard_load__(self) -> Any:
        if self.location is None:
            raise MissingResultError(
                f"the result of {self.what} was not persisted, so it cannot be read after its flow run; "
                "set persist_result=True on the task (or flow), or TASKYARD_PERSIST_RESULTS=1, to keep it"
            )
        return load_location(self.location)


def load_location(location: str) -> Any:
    """Read and decode the result record at ``location`` (a path or an fsspec URL).

    Raises:
        MissingResultError: Nothing is stored there (any more).
        CorruptResultError: The record is damaged.
    """
    try:
        if "://" in location and not location.startswith("file://"):
            import fsspec

            with fsspec.open(location, "rb") as fh:
                data = fh.read()
        else:
            data = Path(location.removeprefix("file://")).read_bytes()
    except FileNotFoundError:
        raise MissingResultError(f"no result is stored at {location} any more") from None
    return decode_record(data, location)


def decode_record(data: bytes, where: str, key: bytes | None = None) -> Any:
    """The value of a result record (its serializer named in its header); ``where`` names it in errors.

    Raises:
        MissingResultError: Its serializer cannot be named here.
        CorruptResultError: The record is damaged.
    """
    from taskyard.results import decode, get_serializer

    lines = data.split(b"\n", 2)  # magic line, JSON header, payload
    try:
        name = json.loads(lines[1]).get("serializer", "pickle") if len(lines) > 1 else "pickle"
    except (ValueError, AttributeError):
        name = "pickle"  # decode() reports the damage
    try:
        serializer = get_serializer(name)
    except (TypeError, ValueError, LookupError):
        raise MissingResultError(f"the result at {where} was written with serializer {name!r}, which cannot be named here") from None
    return decode(data, serializer, where, key).value
