"""Adaptive batching: the ready calls of a map shipped to a backend as few, larger tasks.

::

    flow process                                   backend worker
    ────────────                                   ──────────────
    BatchSizer.size(...)  ── n calls ──▶ one backend task: run_batch(calls)
       ▲                                             │ each call through the engine
       │ record(n, seconds)                          │ on its own (retries, timeout,
       └──────────── BatchResult ◀───────────────────┘ cache, hooks, logs)
                     (one State per call + the batch's duration)

Every backend charges a fixed cost per task it schedules (about 2 ms on a
Dask cluster, 0.5 ms on Ray, tens of µs through a process pool); a map of
tiny tasks pays it per call unless the calls travel together. A runner that
ships calls (``requires_pickling``) asks a :class:`BatchSizer` how many of a
map's ready calls to put in the next backend task. The size starts at one,
grows while calls are short, and aims for backend tasks of about
:data:`TARGET_SECONDS` — so calls that each take longer than that stay one
per backend task, and a CPU-bound map keeps its load balancing.

``@task(batch_size=N)`` or a runner's ``batch_size=N`` fixes the size
(``1`` turns batching off); the task's setting wins.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskyard.logs import levels_held

if TYPE_CHECKING:
    from taskyard.engine import TaskCall
    from taskyard.states import State

__all__ = ("BatchSizer", "BatchResult", "run_batch", "batch_levels", "check_batch_size", "TARGET_SECONDS", "MAX_BATCH")

#: The duration an adaptive batch aims for (joblib's ``batch_size="auto"`` aims for 0.2–2 s;
#: shorter here so the first results of a map arrive early).
TARGET_SECONDS = 0.1
#: No batch holds more calls than this.
MAX_BATCH = 4096
# A batch grows at most this many times over from one size to the next, or
# to as many calls as the measured ones would run in _GROW_SECONDS, if more:
# a batch that short cannot leave a worker idle for long at a map's end, and
# calls of a microsecond reach their size in one step instead of four.
_GROWTH = 8
_GROW_SECONDS = 0.005


def check_batch_size(value: Any, owner: str) -> int | None:
    """``value`` as a batch size (None: adaptive), or a clear error naming ``owner``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{owner}: batch_size must be a whole number ≥ 1 (1 turns batching off) or None (adaptive), not {value!r}"
        )
    return value


class BatchSizer:
    """How many calls of one task go in the next backend task.

    Args:
        fixed: A fixed size (``1``: no batching); None adapts to measured durations.
        target_seconds: The duration an adaptive batch aims for.
        max_size: The largest adaptive batch.

    Thread-safe: a runner records finished batches from its callback threads.
    """

    __slots__ = ("fixed", "target", "max_size", "_size", "_per_call", "_lock")

    def __init__(self, fixed: int | None = None, target_seconds: float = TARGET_SECONDS, max_size: int = MAX_BATCH) -> None:
        self.fixed = fixed
        self.target = target_seconds
        self.max_size = max_size
        self._size = 1
        self._per_call: float | None = None
        self._lock = threading.Lock()

    @property
    def per_call_seconds(self) -> float | None:
        """The smoothed duration of one call, once a batch has been measured."""
        return self._per_call

    def size(self, remaining: int, workers: int = 1, min_seconds: float = 0.0) -> int:
        """The size of the next batch, with ``remaining`` calls left and ``workers`` to share them.

        An adaptive size never leaves a worker idle at the end of a map: no
        batch takes more than a quarter of each worker's share of what is left
        — unless that would make it shorter than ``min_seconds`` by the
        measured duration of a call (a batch that short costs a worker more
        waiting for the next one than it could leave idle).
        """
        if self.fixed is not None:
            return max(1, min(self.fixed, remaining))
        share = math.ceil(remaining / (4 * max(1, workers)))
        per_call = self._per_call
        if min_seconds and per_call is not None:
            share = max(share, int(min_seconds / per_call))
        return max(1, min(self._size, share, remaining))

    def record(self, calls: int, seconds: float) -> None:
        """A batch of ``calls`` took ``seconds`` to run: adapt the size (no effect when fixed)."""
        if self.fixed is not None or calls < 1:
            return
        per_call = max(seconds, 1e-7) / calls
        with self._lock:
            # Smoothed, but a slower batch counts at once: a map whose calls get
            # long must not keep shipping huge batches.
            if self._per_call is None or per_call > self._per_call:
                self._per_call = per_call
            else:
                self._per_call = 0.5 * self._per_call + 0.5 * per_call
            ideal = int(self.target / self._per_call)
            grown = min(ideal, max(max(self._size, calls) * _GROWTH, int(_GROW_SECONDS / self._per_call)))
            self._size = max(1, min(self.max_size, grown))


class BatchResult:
    """What a batch sends back: one State per call, in order, and how long the batch ran.

    Its ``states`` map is keyed by task run id, so a call downstream of one
    call of a batch can be handed the whole batch result (the backend's
    native future of the batch) and pick its upstream's State out of it.
    """

    __slots__ = ("states", "seconds")

    def __init__(self, states: Mapping[str, State[Any]], seconds: float) -> None:
        self.states = dict(states)
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[BatchResult], tuple[dict[str, State[Any]], float]]:
        return BatchResult, (self.states, self.seconds)

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        return f"<BatchResult of {len(self.states)} states in {self.seconds:.3g} s>"


def run_batch(calls: Sequence[TaskCall[Any]], run_one: Callable[[TaskCall[Any]], State[Any]]) -> BatchResult:
    """Run each call of a batch on its own, here, and collect their States (worker side).

    Each call goes through the engine by itself: a call that raises ends
    Failed alone and the next call runs; retries, timeout, cache and hooks
    are each call's own. ``run_one(call) -> State`` runs one call
    (:func:`taskyard.runners.base.run_call`, or a runner's wrapper of it).
    """
    started = time.perf_counter()
    with batch_levels(calls):
        states = {call.task_run.id: run_one(call) for call in calls}
    return BatchResult(states, time.perf_counter() - started)


@contextlib.contextmanager
def batch_levels(calls: Sequence[TaskCall[Any]]) -> Iterator[None]:
    """Around a batch on a worker: the loggers pass its flow run's level once for all its calls.

    Each call captures its own records either way; this only spares setting
    (and resetting) the worker's logger levels call by call.
    """
    flow_run = calls[0].flow_run if calls else None
    if flow_run is None or flow_run.pid in (0, os.getpid()):  # no capture in the flow's own process
        yield
        return
    with levels_held(flow_run.log_level):
        yield
