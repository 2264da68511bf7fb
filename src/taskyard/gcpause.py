"""Holding off Python's cyclic garbage collector while a large map's calls are made.

A map of N calls allocates several container objects per call (its
parameters, run identity, call, future, state) that all live until the map
is done. The collector starts a young-generation pass every 700 net
allocations and, every tenth and hundredth of those, passes over older
generations up to the whole heap — which, in a flow holding a large map,
is mostly these same live objects. None of them can be garbage yet, so
those passes find nothing: on a 10,000-call no-op map on the process
runner they were about 40% of the flow process's CPU time. Pausing the
automatic passes while such a batch of objects is made (and turning them
back on right after) lets one pass see them all later.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ("collector_paused", "PAUSE_FROM")

#: Allocations of fewer calls than this never pause the collector.
PAUSE_FROM = 1000


@contextlib.contextmanager
def collector_paused(calls: int, at_least: int = PAUSE_FROM) -> Iterator[None]:
    """Pause automatic garbage collection in this block when it makes ``calls`` ≥ ``at_least`` calls.

    Nothing happens when the collector is off already (a user's choice, or
    another such block in another thread, which turns it back on).
    """
    if calls < at_least or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
