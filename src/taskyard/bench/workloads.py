"""The workloads: each one's taskyard version, raw version and expected result.

A :class:`Workload` is run two ways on the same data:

* ``in_flow(size, data)`` with the taskyard API. ``timing="body"``: it runs
  inside a flow body and is timed from its first submit to its last result;
  ``timing="flows"``: it calls flows itself and is timed around those calls.
* ``raw(backend, size, data)`` on the bare backend (:mod:`~taskyard.bench.baselines`).

Both results go through ``check`` — a wrong value is an error, not a fast run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskyard import flow, unmapped
from taskyard.bench.baselines import RawBackend
from taskyard.bench.functions import (
    CPU_LOOPS,
    inc,
    inc_task,
    measure,
    measure_task,
    noop,
    noop_task,
    spin,
    spin_task,
    spin_unbatched_task,
    TINY_LOOPS,
    tiny,
    tiny_task,
    tiny_unbatched_task,
    square,
    square_task,
    total,
    total_task,
)

__all__ = ("Workload", "WORKLOADS", "WrongResultError", "flow_workload", "LARGE_ARG_BYTES", "FLOW_TASKS")

#: Size of the shared argument of ``large-arg``.
LARGE_ARG_BYTES = 50 * 1024 * 1024
#: Tasks in each small flow of ``many-flows``.
FLOW_TASKS = 4


class WrongResultError(AssertionError):
    """A workload returned something other than its expected result."""


def _no_data(size: int) -> Any:
    return None


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    Attributes:
        name: The name on the command line (``noop-map``).
        description: One line for the report.
        default_size: ``size`` when ``--size`` is not given.
        in_flow: The taskyard version: ``(size, data) -> result``.
        raw: The raw-backend version: ``(backend, size, data) -> result``; None if there is none.
        check: ``(result, size, data)``; raises :class:`WrongResultError` on a wrong result.
        tasks: ``size -> number of task runs`` (for tasks/s); None if unknown.
        prepare: ``size -> data``, made once, outside the timed region.
        timing: ``"body"`` (timed inside one flow body) or ``"flows"`` (timed around flow calls).
    """

    name: str
    description: str
    default_size: int | None
    in_flow: Callable[[int, Any], Any]
    raw: Callable[[RawBackend, int, Any], Any] | None
    check: Callable[[Any, int, Any], None]
    tasks: Callable[[int], int] | None = None
    prepare: Callable[[int], Any] = _no_data
    timing: str = "body"


def _expect(expected: Callable[[int, Any], Any]) -> Callable[[Any, int, Any], None]:
    """A ``check`` comparing a result with ``expected(size, data)``."""

    def check(result: Any, size: int, data: Any) -> None:
        want = expected(size, data)
        if result != want:
            raise WrongResultError(f"expected {_short(want)}, got {_short(result)}")

    return check


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _same(n: int) -> int:
    return n


# -- noop-map: per-task overhead -------------------------------------------------


def _noop_flow(size: int, data: Any) -> Any:
    return noop_task.map(range(size)).result()


def _noop_raw(b: RawBackend, size: int, data: Any) -> Any:
    return b.gather(b.map(noop, range(size)))


# -- chain: each task takes the previous one's future ------------------------------


def _chain_flow(size: int, data: Any) -> Any:
    future = inc_task.submit(0)
    for _ in range(size - 1):
        future = inc_task.submit(future)  # type: ignore[call-overload]  # a future stands for its value
    return future.result()


def _chain_raw(b: RawBackend, size: int, data: Any) -> Any:
    if b.passes_futures:  # the backend resolves the dependency itself
        handle = b.submit(inc, 0)
        for _ in range(size - 1):
            handle = b.submit(inc, handle)
        return b.result(handle)
    value = 0
    for _ in range(size):  # wait for each link before submitting the next
        value = b.result(b.submit(inc, value))
    return value


# -- fan-in: map, then one reduce over the list of futures -------------------------


def _fan_in_flow(size: int, data: Any) -> Any:
    return total_task.submit(square_task.map(range(size))).result()  # type: ignore[arg-type]


def _fan_in_raw(b: RawBackend, size: int, data: Any) -> Any:
    squares = b.map(square, range(size))
    if not (b.passes_futures and b.resolves_nested):
        squares = b.gather(squares)
    return b.result(b.submit(total, squares))


# -- cpu-map: CPU-bound pure Python --------------------------------------------------


def _cpu_flow(size: int, data: Any) -> Any:
    return spin_task.map(range(size)).result()


def _cpu_unbatched_flow(size: int, data: Any) -> Any:
    return spin_unbatched_task.map(range(size)).result()


def _cpu_raw(b: RawBackend, size: int, data: Any) -> Any:
    return b.gather(b.map(spin, range(size)))


_SPIN_SUM = CPU_LOOPS * (CPU_LOOPS - 1) // 2

# -- tiny-map: many ~0.1 ms calls, batched (the default) and one call per backend task --


def _tiny_flow(size: int, data: Any) -> Any:
    return tiny_task.map(range(size)).result()


def _tiny_unbatched_flow(size: int, data: Any) -> Any:
    return tiny_unbatched_task.map(range(size)).result()


def _tiny_raw(b: RawBackend, size: int, data: Any) -> Any:
    return b.gather(b.map(tiny, range(size)))


_TINY_SUM = TINY_LOOPS * (TINY_LOOPS - 1) // 2

# -- large-arg: one large argument shared by every run ---------------------------------


def _blob(size: int) -> bytes:
    return bytes(range(256)) * (LARGE_ARG_BYTES // 256)


def _large_flow(size: int, blob: bytes) -> Any:
    return measure_task.map(range(size), unmapped(blob)).result()


def _large_raw(b: RawBackend, size: int, blob: bytes) -> Any:
    return b.gather(b.map(measure, range(size), blob=b.share(blob)))


# -- many-flows: cold start, one small flow after another -----------------------------


@flow(name="bench-small-flow")
def small_flow(k: int) -> int:
    """A small flow: map ``inc`` over ``FLOW_TASKS`` numbers from ``k`` and add the results."""
    return sum(inc_task.map(range(k, k + FLOW_TASKS)).result())


def _many_flows(size: int, data: Any) -> Any:
    return [small_flow(k) for k in range(size)]


def _many_raw(b: RawBackend, size: int, data: Any) -> Any:
    results = []
    for k in range(size):
        with b.fresh() as fresh:
            results.append(sum(fresh.gather(fresh.map(inc, range(k, k + FLOW_TASKS)))))
    return results


def _small_flow_result(k: int) -> int:
    return sum(range(k + 1, k + FLOW_TASKS + 1))


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "noop-map", "a map of N no-op tasks: per-task overhead", 10_000,
            _noop_flow, _noop_raw, _expect(lambda n, _: list(range(n))), _same,
        ),
        Workload(
            "chain", "N tasks, each taking the previous one's future", 1_000,
            _chain_flow, _chain_raw, _expect(lambda n, _: n), _same,
        ),
        Workload(
            "fan-in", "a map of N squares, then one sum over the list of futures", 2_000,
            _fan_in_flow, _fan_in_raw, _expect(lambda n, _: sum(i * i for i in range(n))), lambda n: n + 1,
        ),
        Workload(
            "cpu-map", f"N pure-Python CPU tasks of {CPU_LOOPS:,} loop steps (~50 ms each)", 40,
            _cpu_flow, _cpu_raw, _expect(lambda n, _: [k + _SPIN_SUM for k in range(n)]), _same,
        ),
        Workload(
            "cpu-map-unbatched", "cpu-map with batch_size=1: one backend task per call", 40,
            _cpu_unbatched_flow, _cpu_raw, _expect(lambda n, _: [k + _SPIN_SUM for k in range(n)]), _same,
        ),
        Workload(
            "tiny-map", "a map of N tiny tasks (~0.1 ms each), batched as the runner does by default", 20_000,
            _tiny_flow, _tiny_raw, _expect(lambda n, _: [k + _TINY_SUM for k in range(n)]), _same,
        ),
        Workload(
            "tiny-map-unbatched", "tiny-map with batch_size=1: one backend task per call", 20_000,
            _tiny_unbatched_flow, _tiny_raw, _expect(lambda n, _: [k + _TINY_SUM for k in range(n)]), _same,
        ),
        Workload(
            "large-arg", f"a {LARGE_ARG_BYTES // 2**20} MB bytes argument shared by N runs", 20,
            _large_flow, _large_raw, _expect(lambda n, _: [(i, LARGE_ARG_BYTES, i % 256) for i in range(n)]), _same,
            prepare=_blob,
        ),
        Workload(
            "many-flows", f"N small flows one after another ({FLOW_TASKS} tasks each): per-flow cost", 50,
            _many_flows, _many_raw, _expect(lambda n, _: [_small_flow_result(k) for k in range(n)]),
            lambda n: n * FLOW_TASKS, timing="flows",
        ),
    )
}  # fmt: skip


def flow_workload(ref: str) -> Workload:
    """A workload that runs a user's flow (``file.py:flow`` or ``module:flow``) with its defaults.

    It is timed around each whole flow call and has no raw baseline; a run
    that does not end Completed is an error.

    Raises:
        ValueError, LookupError, TypeError: ``ref`` does not name a flow.
    """
    from taskyard.loading import load_flow

    user_flow = load_flow(ref)

    def run(size: int, data: Any) -> Any:
        return user_flow(return_state=True)

    def check(state: Any, size: int, data: Any) -> None:
        if not state.is_completed():
            raise WrongResultError(f"flow run ended {state.name}: {state.message}")

    return Workload(ref, f"the flow {user_flow.name!r} from {ref}", None, run, None, check, timing="flows")
