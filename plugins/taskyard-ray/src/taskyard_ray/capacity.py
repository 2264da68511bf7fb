"""What the Ray cluster can ever offer, to refuse a request no node can meet at once.

Ray would keep such a task pending forever (or until an autoscaler adds a
node). The runner checks each run's request against the nodes alive when it
is submitted — ``ray.nodes()``, read again at most every few seconds — and
ends a run that fits on none of them Failed with
``UnsatisfiableResourcesError``, naming what is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from taskyard.exceptions import UnsatisfiableResourcesError
from taskyard.resources import shortfall
from taskyard.runners.base import Failed, State

__all__ = ("Capacity", "request_of")

_REFRESH_S = 5.0
_FROM_OPTIONS = {"num_cpus": "cpu", "num_gpus": "gpu", "memory": "memory"}
_FROM_RAY = {"CPU": "cpu", "GPU": "gpu", "memory": "memory"}
_FIX = "or add a Ray node that has it (ray start --num-cpus/--num-gpus/--memory/--resources '{{\"{name}\": ...}}')"


def request_of(remote_options: Mapping[str, Any]) -> dict[str, float]:
    """What one remote call with ``remote_options`` holds, in taskyard's names (1 cpu unless told)."""
    request = {"cpu": 1.0}
    for key, name in _FROM_OPTIONS.items():
        if remote_options.get(key) is not None:
            request[name] = float(remote_options[key])
    for name, amount in (remote_options.get("resources") or {}).items():
        request[name] = float(amount)
    return {name: amount for name, amount in request.items() if amount > 0}


class Capacity:
    """The resources of each alive node, in taskyard's names, cached for a few seconds."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._nodes: list[dict[str, float]] = []
        self._read_at = -_REFRESH_S
        self._lock = threading.Lock()

    def nodes(self) -> list[dict[str, float]]:
        with self._lock:
            if time.monotonic() - self._read_at >= _REFRESH_S:
                self._nodes = [
                    {_FROM_RAY.get(k, k): float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
                    for n in self._ray.nodes()
                    if n.get("Alive")
                ]
                self._read_at = time.monotonic()
            return self._nodes

    def refusal(self, remote_options: Mapping[str, Any], run_name: str) -> State[Any] | None:
        """The Failed state for a run whose request fits on no node, or None if some node could run it."""
        if not remote_options or remote_options.get("scheduling_strategy") is not None:
            return None  # 1 cpu fits anywhere; placement groups hold resources under other names
        request = request_of(remote_options)
        nodes = self.nodes()
        if any(shortfall(request, node, "") is None for node in nodes):
            return None
        closest = max(nodes, key=lambda node: sum(node.get(k, 0.0) >= v for k, v in request.items()), default={})
        reason = shortfall(request, closest, "the closest node of the Ray cluster", _FIX)
        message = f"task run {run_name!r} cannot run: {reason}"
        return Failed(UnsatisfiableResourcesError(message), message=message, run_count=0)
