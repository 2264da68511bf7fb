"""The plain functions the workloads run, and the taskyard tasks made from them.

Raw baselines call the plain functions; flows call the tasks. Both live at
module level so worker processes import them by reference.
"""

from __future__ import annotations

from taskyard import task

__all__ = (
    "CPU_LOOPS",
    "noop",
    "inc",
    "square",
    "total",
    "spin",
    "measure",
    "TINY_LOOPS",
    "tiny",
    "tiny_task",
    "tiny_unbatched_task",
    "spin_unbatched_task",
    "noop_task",
    "inc_task",
    "square_task",
    "total_task",
    "spin_task",
    "measure_task",
)

#: Iterations of :func:`spin`: about 50 ms of pure Python on a 2020s core.
CPU_LOOPS = 1_500_000


def noop(x: int) -> int:
    """Return ``x``: a task with nothing to do but its own overhead."""
    return x


def inc(x: int) -> int:
    """Return ``x + 1`` (one link of a chain)."""
    return x + 1


def square(x: int) -> int:
    """Return ``x * x`` (the map half of fan-in)."""
    return x * x


def total(values: list[int]) -> int:
    """Return the sum of ``values`` (the reduce half of fan-in)."""
    return sum(values)


def spin(k: int, loops: int = CPU_LOOPS) -> int:
    """Burn CPU in a pure-Python loop (holds the GIL); return ``k + sum(range(loops))``."""
    acc = 0
    for i in range(loops):
        acc += i
    return k + acc


#: Iterations of :func:`tiny`: about 0.1 ms of pure Python.
TINY_LOOPS = 3_000


def tiny(k: int, loops: int = TINY_LOOPS) -> int:
    """A tiny task (~0.1 ms): ``k + sum(range(loops))``, the kind of call a map has many of."""
    acc = 0
    for i in range(loops):
        acc += i
    return k + acc


def measure(i: int, blob: bytes) -> tuple[int, int, int]:
    """Read the large shared argument: ``(i, len(blob), blob[i])``."""
    return i, len(blob), blob[i]


noop_task = task(name="noop")(noop)
inc_task = task(name="inc")(inc)
square_task = task(name="square")(square)
total_task = task(name="total")(total)
spin_task = task(name="spin")(spin)
measure_task = task(name="measure")(measure)
tiny_task = task(name="tiny")(tiny)
#: The same calls with batching off, for the unbatched rows beside the batched ones.
tiny_unbatched_task = task(name="tiny", batch_size=1)(tiny)
spin_unbatched_task = task(name="spin", batch_size=1)(spin)
