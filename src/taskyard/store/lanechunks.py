"""Chunks for the runs of a lane: written from the lane's columns, with no object per run.

A lane (taskyard.lanes) holds a map's runs by column: their ids as one
stepped number (taskyard.runids), default names, map indices counting up, and each completed run's
start and end as floats. The runs finished since the last pass, from the
front of the lane, become one chunk; a run whose State is not a plain
completion (a failure, a cancellation) has its fields read from that State.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskyard.states import Pending, State
from taskyard.store.codec import TYPE_OF_NAME, encode_chunk, float_column, squeeze

if TYPE_CHECKING:
    from taskyard.lanes import Lane

__all__ = ("finished_upto", "encode_lane", "history_of")


def finished_upto(lane: Lane, start: int, finishing: bool) -> int:
    """Where the runs done one after another from ``start`` end (all of them when the flow run is finishing)."""
    if finishing:
        return lane.length
    end = lane.done.find(0, start)
    return lane.length if end < 0 else end


def encode_lane(lane: Lane, at: float, start: int, stop: int, tags: tuple[str, ...], counts: dict[str, int]) -> bytes:
    """One chunk for runs ``start`` to ``stop`` of ``lane``, submitted at ``at``; ``counts`` gains their state names."""
    count = stop - start
    special = {i: s for i, s in lane.special.items() if start <= i < stop}
    pending = count - lane.done.count(1, start, stop)
    starts: Any
    ends: Any
    if not special and not pending:  # every run completed on the fast path: most maps
        starts, ends = float_column(lane.starts[start:stop]), float_column(lane.ends[start:stop])
        counts["Completed"] = counts.get("Completed", 0) + count
        names: Any = ("=", "Completed")
        messages: Any = ("=", None)
        run_counts: Any = ("=", 1)
        history: Any = ("=", None)
    else:
        starts, ends = lane.starts[start:stop].tolist(), lane.ends[start:stop].tolist()
        names, messages, run_counts, history = ["Completed"] * count, [None] * count, [1] * count, [None] * count
        waiting = Pending()
        for offset in range(count):
            state = special.get(start + offset)
            if state is None and not lane.done[start + offset]:
                state = waiting
            if state is None:
                continue
            names[offset], messages[offset], run_counts[offset] = state.name, state.message, state.run_count
            begun = state.start_time
            starts[offset] = begun.timestamp() if begun is not None else None
            ends[offset] = state.timestamp.timestamp()
            history[offset] = history_of(state)
        for name in set(names):
            counts[name] = counts.get(name, 0) + names.count(name)
    columns: list[Any] = [
        ("s", (lane.id_base, start)), ("n", lane.prefix), ("=", lane.task.name), ("r", start),
        ("=", tags), ("=", at), None if TYPE_OF_NAME.keys() >= set(squeeze_names(names)) else _types(names, special, start),
        names, messages, run_counts, starts, ends, ("=", None), history,
    ]  # fmt: skip
    return encode_chunk(count, [squeeze(c) for c in columns], squeezed=True)


def squeeze_names(names: Any) -> list[str]:
    return [names[1]] if type(names) is tuple else names


def _types(names: list[str], special: dict[int, State[Any]], start: int) -> list[str]:
    types = [TYPE_OF_NAME.get(name, "COMPLETED") for name in names]
    for index, state in special.items():
        types[index - start] = state.type._value_
    return types


def history_of(state: State[Any]) -> tuple[tuple[Any, ...], ...] | None:
    """A State's history as a chunk stores it (None without one)."""
    if not state.history:
        return None
    return tuple((s.type._value_, s.name, s.message, s.timestamp.timestamp()) for s in state.history)
