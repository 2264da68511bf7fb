"""How calls and states cross Ray: one pickle each, made with the C pickler where it is safe.

Ray serialises every argument and return value of a remote call on its
own, through its cloudpickle (a Python-level pickler). A task call is many
small objects (its parameters, run identity, upstream references) and a
State a dozen fields, so that costs more per no-op task than Ray's own
scheduling. Here each is pickled once, into ``bytes``, with the C pickler,
which Ray then ships as an opaque, already serialised value.

The C pickler is not always right: it pickles what the flow's ``__main__``
defines by reference, which a worker cannot import, and it refuses local
functions and lambdas. Then (and whenever a module is registered with
``cloudpickle.register_pickle_by_value``) cloudpickle makes the bytes, as
Ray would have. Either kind of bytes loads with ``pickle.loads``.

Large results are not turned into bytes: they stay in Ray as objects, so
Ray keeps their buffers out of band (zero copy), as for any return value.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from taskyard.runners.base import State, sendable_state

__all__ = ("dumps", "loads", "state_dumps", "as_state", "as_outcome")

_PROTOCOL = 5
_MAIN = b"__main__"


def dumps(value: Any) -> bytes:
    """``value`` pickled for a Ray worker or the flow process (see the module docstring).

    Raises:
        Exception: What cloudpickle raises for a value nothing can pickle.
    """
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            data = pickle.dumps(value, _PROTOCOL)
        except Exception:
            pass
        else:
            if _MAIN not in data:
                return data
    return cloudpickle.dumps(value, _PROTOCOL)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    """The value :func:`dumps` pickled."""
    return pickle.loads(data)


def state_dumps(state: State[Any], where: str) -> bytes:
    """A final state as bytes; a result or exception that cannot be pickled ends the run Failed, saying why."""
    try:
        return dumps(state)
    except Exception:
        return dumps(sendable_state(state, where))


def as_state(value: Any) -> State[Any]:
    """A state as a Ray worker returned it: bytes from :func:`state_dumps`, or the State object itself."""
    if type(value) is bytes:
        return loads(value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def as_outcome(value: Any) -> Any:
    """A run's outcome as a Ray worker returned it: a State, or the BatchResult of the batch it ran in."""
    if type(value) is bytes:
        return loads(value)
    return value
