"""Finding futures inside task arguments, and replacing them with results.

Arguments may hold futures (or states) anywhere: nested in lists, tuples,
sets, dicts, dataclasses and pydantic models. :func:`find_upstreams` lists
them (so the dispatcher knows what a run waits for) and :func:`resolve`
rebuilds the arguments with each future replaced by its result. Containers
without futures are returned as they are, never copied. ``quote(x)`` is
passed through unopened; ``allow_failure(f)`` marks an upstream whose failure
hands the exception to the task instead of stopping it.

Both the dispatcher (in the flow process, for runners that start a run once
its upstreams are done) and the engine (on a worker, for runners such as Dask
that resolve dependencies themselves) use these two functions.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel

from taskyard.annotations import allow_failure, quote
from taskyard.futures import FutureList, TaskFuture, wait
from taskyard.states import NotReady, State

__all__ = (
    "FutureRef",
    "Upstream",
    "find_upstreams",
    "scan",
    "resolve",
    "first_blocking_failure",
    "local_lookup",
    "mapping_lookup",
    "pending_futures",
    "resolve_futures_to_states",
    "resolve_futures_to_results",
    "ATOMIC",
)

#: Types whose values never hold a future or a State (scanning them finds nothing), and which pickle with
#: the standard library: exactly these types (a subclass may hold anything).
ATOMIC = frozenset({int, float, str, bytes, bool, type(None), complex, range, bytearray})
_MAX_DEPTH = 64


class FutureRef:
    """What a :class:`TaskFuture` becomes when a task call is pickled."""

    __slots__ = ("task_run_id", "task_run_name")

    def __init__(self, task_run_id: str, task_run_name: str = "") -> None:
        self.task_run_id = task_run_id
        self.task_run_name = task_run_name or task_run_id

    def __reduce__(self) -> tuple[type[FutureRef], tuple[str, str]]:
        return FutureRef, (self.task_run_id, self.task_run_name)

    def __repr__(self) -> str:
        return f"FutureRef({self.task_run_name!r})"


class Upstream(NamedTuple):
    """A future (or a State) a run depends on; ``may_fail`` if wrapped in allow_failure."""

    future: TaskFuture[Any] | FutureRef | State[Any]
    may_fail: bool


def find_upstreams(obj: Any, out: list[Upstream] | None = None) -> list[Upstream]:
    """List the futures inside ``obj`` (in the order met; repeats kept)."""
    if out is None:
        out = []
    _find(obj, out, False, 0)
    return out


def scan(obj: Any, out: list[Upstream]) -> bool:
    """Append the futures inside ``obj`` to ``out``; True if ``resolve`` must rewrite ``obj``.

    That is the case when it holds a future, a state or a quote/allow_failure.
    """
    return _find(obj, out, False, 0)


def _find(obj: Any, out: list[Upstream], may_fail: bool, depth: int) -> bool:
    cls = type(obj)
    if cls in ATOMIC or depth > _MAX_DEPTH:
        return False
    if isinstance(obj, (TaskFuture, FutureRef, State)):
        out.append(Upstream(obj, may_fail))
        return True
    if cls is quote:
        return True
    if cls is allow_failure:
        _find(obj.value, out, True, depth + 1)
        return True
    found = False
    d = depth + 1
    if isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            found = _find(item, out, may_fail, d) or found
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found = _find(key, out, may_fail, d) or found
            found = _find(value, out, may_fail, d) or found
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            found = _find(getattr(obj, name), out, may_fail, d) or found
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            found = _find(getattr(obj, f.name), out, may_fail, d) or found
    return found


Lookup = Callable[[Any], State[Any]]


def local_lookup(future: Any) -> State[Any]:
    """The state of a local future (which must be done), or a State itself."""
    state: State[Any] = future if isinstance(future, State) else future.state
    return state


def mapping_lookup(states: Mapping[str, State[Any]]) -> Lookup:
    """Look up upstream states by task run id (the engine on a worker); a State is its own."""
    return lambda future: future if isinstance(future, State) else states[future.task_run_id]


def first_blocking_failure(upstreams: Iterable[Upstream], lookup: Lookup) -> State[Any] | None:
    """The NotReady state for a run if an upstream it needs ended badly, else None."""
    for future, may_fail in upstreams:
        if may_fail:
            continue
        state = lookup(future)
        if state.is_bad():
            name = getattr(future, "task_run_name", None) or f"(a {state.name} state given as an argument)"
            return NotReady(name, state)
    return None


def pending_futures(upstreams: Iterable[Upstream]) -> list[TaskFuture[Any]]:
    """The local futures among ``upstreams`` (States and refs need no waiting)."""
    return [u.future for u in upstreams if isinstance(u.future, TaskFuture)]


def resolve(obj: Any, lookup: Lookup = local_lookup) -> Any:
    """Return ``obj`` with every future and state replaced by its result."""
    return _resolve(obj, lookup, False, 0)


def resolve_futures_to_states(obj: Any) -> Any:
    """Wait for the futures anywhere in ``obj``; return it with each replaced by its final State.

    Lists, tuples, sets, dicts, dataclasses and pydantic models are looked
    into (and copied only where something changed), as for task arguments.
    """
    wait(pending_futures(find_upstreams(obj)))
    return _resolve(obj, _to_state, False, 0)


def resolve_futures_to_results(obj: Any) -> Any:
    """Wait for the futures anywhere in ``obj``; return it with each replaced by its result.

    States in ``obj`` are replaced by their results too.

    Raises:
        Exception: The exception of the first future or State found that
            did not complete.
    """
    wait(pending_futures(find_upstreams(obj)))
    return _resolve(obj, local_lookup, False, 0)


def _to_state(future: Any) -> State[Any]:  # a marker: this resolution stops at States
    return local_lookup(future)


def _resolve(obj: Any, lookup: Lookup, may_fail: bool, depth: int) -> Any:
    cls = type(obj)
    if cls in ATOMIC or depth > _MAX_DEPTH:
        return obj
    if isinstance(obj, (TaskFuture, FutureRef)):
        if lookup is _to_state:
            return lookup(obj)
        return lookup(obj).result(raise_on_failure=not may_fail)
    if isinstance(obj, State):
        return obj if lookup is _to_state else obj.result(raise_on_failure=not may_fail)
    if cls is quote:
        return obj.value
    if cls is allow_failure:
        return _resolve(obj.value, lookup, True, depth + 1)
    d = depth + 1
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_resolve(item, lookup, may_fail, d) for item in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        if cls in (list, tuple, set, frozenset):
            return cls(items)
        if isinstance(obj, FutureList):  # its results are a plain list, not futures
            return items
        if hasattr(obj, "_fields"):  # namedtuple
            return cls(*items)
        return cls(items)
    if isinstance(obj, dict):
        pairs = [(_resolve(k, lookup, may_fail, d), _resolve(v, lookup, may_fail, d)) for k, v in obj.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, obj.items(), strict=True)):
            return obj
        out = obj.copy()
        out.clear()
        out.update(pairs)
        return out
    if isinstance(obj, BaseModel):
        changes = {}
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            new = _resolve(value, lookup, may_fail, d)
            if new is not value:
                changes[name] = new
        return obj.model_copy(update=changes) if changes else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            new = _resolve(value, lookup, may_fail, d)
            if new is not value:
                changed[f.name] = new
        if not changed:
            return obj
        clone = copy.copy(obj)
        for name, value in changed.items():
            object.__setattr__(clone, name, value)
        return clone
    return obj
