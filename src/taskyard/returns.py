"""A flow body's return value → the flow run's final State.

As in Prefect:

* a ``State`` returned whole is the flow run's state (its type, name,
  message and data), so ``return Completed(message="…")`` or
  ``return Failed(message="…")`` decides how the run ends;
* futures anywhere in the value are waited for and come back as their final
  States (``return a.submit(1), b(2, return_state=True)`` gives two States);
* the run is Failed if any of those States (or States nested in the value)
  ended badly; its ``result()`` raises the first one's exception.
"""

from __future__ import annotations

from typing import Any

from taskyard.futures import wait as wait_futures
from taskyard.inputs import find_upstreams, local_lookup, pending_futures, resolve_futures_to_states
from taskyard.states import Completed, Failed, State

__all__ = ("state_from_return",)


def state_from_return(value: Any, run_count: int) -> State[Any]:
    """The final State of a flow run whose body returned ``value``."""
    if isinstance(value, State):
        if value.is_final():
            return value.model_copy(update={"run_count": run_count})
        return Failed(message=f"the flow returned a {value.name} state, which is not final", run_count=run_count)
    upstreams = find_upstreams(value)
    if not upstreams:
        return Completed(value, run_count=run_count)
    wait_futures(pending_futures(upstreams))
    data = resolve_futures_to_states(value)
    states = [local_lookup(u.future) for u in upstreams]
    bad = [state for state in states if state.is_bad()]
    if not bad:
        return Completed(data, run_count=run_count)
    first = bad[0]
    return Failed(
        first.exception(),
        message=f"{len(bad)} of the {len(states)} runs the flow returned did not complete; the first: {first}",
        run_count=run_count,
    )
