"""``@task(resources=...)`` on Dask: worker resources, and refusing what no worker can meet.

::

    task.resources {"gpu": 1, "memory": 4e9, "cpu": 2, "licence": 1}
        │  the workers the scheduler knows now (cached ~2 s; looked up again
        │  before refusing), plus, for an adaptive cluster the runner started,
        │  the worker it would add
        ├─ no single worker can ever meet it → Failed (UnsatisfiableResourcesError) at once
        ▼
    Dask resources {"GPU": 1, "licence": 1}       (+ "CPU"/"MEMORY" where workers declare them)
        merged under dask_options(resources=...) and dask-resource: tags, which win key by key

Names: ``gpu`` → ``GPU``, ``cpu`` → ``CPU``, ``memory`` → ``MEMORY`` (bytes),
custom names unchanged — so workers are started with
``--resources "GPU=1 MEMORY=16e9 licence=2"``. Dask has no CPU or memory
resource of its own: while no worker declares ``CPU`` (``MEMORY``), the
request is checked against each worker's thread count (memory limit) and not
passed to Dask, which runs one task per thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from taskyard.exceptions import UnsatisfiableResourcesError
from taskyard.resources import format_amount, shortfall
from taskyard.runners.base import State, TaskCall, unsatisfiable_resources
from taskyard.states import Failed

__all__ = ("DASK_NAMES", "dask_resources", "worker_capacity", "ClusterResources")

DASK_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "MEMORY"}
_OURS = {dask: ours for ours, dask in DASK_NAMES.items()}
_DERIVED = ("CPU", "MEMORY")  # Dask has these only when workers declare them
_FRESH_SECONDS = 2.0
_FIX = (
    'or start a Dask worker that has it: dask worker ... --resources "NAME=AMOUNT" '
    "(taskyard's gpu, cpu and memory are GPU, CPU and MEMORY there)"
)


def dask_resources(request: Mapping[str, float], declared: set[str] | frozenset[str]) -> dict[str, float]:
    """The Dask worker resources for a request, given the resource names the workers declare."""
    out: dict[str, float] = {}
    for name, amount in request.items():
        dask_name = DASK_NAMES.get(name, name)
        if amount and (dask_name not in _DERIVED or dask_name in declared):
            out[dask_name] = amount
    return out


def worker_capacity(info: Mapping[str, Any], declared: set[str] | frozenset[str]) -> dict[str, float]:
    """One worker's capacity in taskyard's names, from its scheduler info (or spec options)."""
    resources = info.get("resources") or {}
    capacity = {_OURS.get(name, name): float(amount) for name, amount in resources.items()}
    if "CPU" not in declared:
        capacity["cpu"] = float(info.get("nthreads") or 0) or math.inf
    if "MEMORY" not in declared:
        limit = info.get("memory_limit")
        capacity["memory"] = float(limit) if isinstance(limit, (int, float)) and limit > 0 else math.inf
    return capacity


class ClusterResources:
    """What the workers of one runner's cluster have, for requests to be mapped and judged."""

    def __init__(self, client: Any, cluster: Any = None, adaptive: bool = False) -> None:
        self._client = client
        self._spec = _new_worker_options(cluster) if adaptive else None
        self._lock = threading.Lock()
        self._seen_at = -math.inf
        self._workers: list[Mapping[str, Any]] = []
        self._declared: frozenset[str] = frozenset()

    def options(self, call: TaskCall[Any], options: Mapping[str, Any]) -> Mapping[str, Any]:
        """``options`` with the call's request added as Dask resources (explicit ones win)."""
        if not call.task.resources:
            return options
        mapped = dask_resources(call.task.resources, self._view(refresh=False)[1])
        if not mapped:
            return options
        return {**options, "resources": {**mapped, **(options.get("resources") or {})}}

    def refusal(self, call: TaskCall[Any]) -> State[Any] | None:
        """The Failed state for a call no worker can ever run, or None."""
        if not call.task.resources:
            return None
        refused = self._judge(call, refresh=False)
        if refused is not None:  # a worker may have joined since: look again before refusing
            refused = self._judge(call, refresh=True)
        return refused

    def _judge(self, call: TaskCall[Any], refresh: bool) -> State[Any] | None:
        workers, declared = self._view(refresh)
        if not workers:
            return None  # nothing to judge by yet: Dask holds the run until a worker joins
        request = call.task.resources
        capacities = [worker_capacity(info, declared) for info in workers]
        if any(shortfall(request, capacity, "") is None for capacity in capacities):
            return None
        largest: dict[str, float] = {}
        for capacity in capacities:
            for name, amount in capacity.items():
                largest[name] = max(largest.get(name, 0.0), amount)
        refused = unsatisfiable_resources(call, largest, "the largest Dask worker", _FIX)
        if refused is not None:
            return refused
        message = (
            f"task run {call.task_run.name!r} cannot run: no single Dask worker has all of "
            f"{', '.join(format_amount(k, v) for k, v in request.items())}, though each part exists on some "
            f"worker; a run goes to one worker. {_FIX[0].upper()}{_FIX[1:]}"
        )
        return Failed(UnsatisfiableResourcesError(message), message=message, run_count=0)

    def _view(self, refresh: bool) -> tuple[list[Mapping[str, Any]], frozenset[str]]:
        with self._lock:
            if refresh or time.monotonic() - self._seen_at > _FRESH_SECONDS:
                try:
                    workers = list(self._client.scheduler_info().get("workers", {}).values())
                except Exception:  # the scheduler is unreachable: judge by what was seen last
                    return self._workers, self._declared
                if self._spec is not None:
                    workers.append(self._spec)
                self._workers = workers
                self._declared = frozenset(n for info in workers for n in (info.get("resources") or {}))
                self._seen_at = time.monotonic()
            return self._workers, self._declared


def _new_worker_options(cluster: Any) -> Mapping[str, Any] | None:
    """The options of the worker an adaptive SpecCluster (LocalCluster) would add, if it says."""
    spec = getattr(cluster, "new_spec", None)
    options = spec.get("options") if isinstance(spec, Mapping) else None
    if not isinstance(options, Mapping):
        return None
    return {
        "resources": options.get("resources") or {},
        "nthreads": options.get("nthreads"),
        "memory_limit": options.get("memory_limit"),
    }
