"""The flow run the calling code belongs to: ``flow_run.id``, ``flow_run.name`` ...

Each attribute is read when it is accessed; outside a flow run it is None
(``tags`` and ``parameters`` are empty, ``run_count`` is 0).
"""

from typing import Any

from taskyard.context import flow_run_var

__all__ = ("id", "name", "flow_name", "tags", "parameters", "run_count")  # noqa: F822 - read by __getattr__

_EMPTY: dict[str, Any] = {"id": None, "name": None, "flow_name": None, "tags": [], "parameters": {}, "run_count": 0}


def __getattr__(attribute: str) -> Any:
    if attribute not in _EMPTY:
        raise AttributeError(f"module 'taskyard.runtime.flow_run' has no attribute {attribute!r}")
    run = flow_run_var.get()
    if run is None:
        empty = _EMPTY[attribute]
        return type(empty)() if isinstance(empty, (list, dict)) else empty
    value = getattr(run, attribute)
    return sorted(value) if attribute == "tags" else value
