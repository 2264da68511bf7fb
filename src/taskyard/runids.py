"""The run ids of a lane's calls: one random number stepped, not one random number per call.

A lane (taskyard.lanes) of N calls needs N run ids in the flow process, in
the worker that runs them (a call may ask for its own) and in the run store.
Drawn one by one they cost a system call's worth of random bytes per call
and 32 characters per call on every pipe and in every chunk. Instead the lane
draws one random 128-bit ``base``, and call ``i``'s id is
``base + i * ID_STEP`` modulo 2**128, as 32 hex digits:

- within a lane no two ids are equal (an odd step is a one-to-one map modulo 2**128);
- against any other id, random or stepped, two ids meet as seldom as two
  random ones do (every lane's base is random);
- the first 8 digits, which default run names show, differ from call to
  call: the step's top 32 bits are odd, so two calls can share them only
  3,954,393,975 calls apart or more.
"""

from __future__ import annotations

import os

__all__ = ("ID_STEP", "lane_base", "stepped_id", "stepped_ids")

#: The step between two calls' ids: odd, its digits those of the golden ratio's fraction.
ID_STEP = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MASK = (1 << 128) - 1


def lane_base() -> int:
    """A fresh random base for a lane's ids."""
    return int.from_bytes(os.urandom(16), "big")


def stepped_id(base: int, index: int) -> str:
    """The id of call ``index`` of the lane whose ids start at ``base``."""
    return f"{(base + index * ID_STEP) & _MASK:032x}"


def stepped_ids(base: int, start: int, count: int) -> list[str]:
    """The ids of calls ``start`` to ``start + count``."""
    value = (base + start * ID_STEP) & _MASK
    ids = []
    for _ in range(count):
        ids.append(f"{value:032x}")
        value = (value + ID_STEP) & _MASK
    return ids
