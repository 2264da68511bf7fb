"""Cache keys: ``task_input_hash``, cache policies, and the stable hashing under them.

A cache key is a string; a run whose key has a record that has not expired
is not run again — it ends ``Cached`` with the stored value. Keys are stable
across processes and Python runs (they hash a canonical form of the values,
not ``hash()``), so a process-pool worker, a cluster worker and tomorrow's
flow run all compute the same key for the same call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskyard.context import FlowRunInfo, TaskRunInfo

__all__ = (
    "CacheContext",
    "CachePolicy",
    "INPUTS",
    "TASK_SOURCE",
    "RUN_ID",
    "FLOW_PARAMETERS",
    "NONE",
    "NO_CACHE",
    "DEFAULT",
    "task_input_hash",
    "stable_hash",
)


@dataclass(frozen=True, slots=True)
class CacheContext:
    """What a cache key function is given besides the parameters."""

    task: Any
    task_run: TaskRunInfo
    flow_run: FlowRunInfo | None


def stable_hash(*parts: Any) -> str:
    """A SHA-256 hex digest of a canonical form of ``parts``, equal in every process."""
    digest = hashlib.sha256()
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    cls = type(obj)
    digest.update(cls.__qualname__.encode() + b"\x00")
    if obj is None or cls in (bool, int, float, complex, str):
        digest.update(repr(obj).encode())
    elif cls in (bytes, bytearray):
        digest.update(bytes(obj))
    elif isinstance(obj, (list, tuple)):
        digest.update(str(len(obj)).encode())
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, dict):
        items = sorted((stable_hash(k), k, v) for k, v in obj.items())
        for key_hash, _, value in items:
            digest.update(key_hash.encode())
            _feed(digest, value)
    elif isinstance(obj, (set, frozenset)):
        for item_hash in sorted(stable_hash(item) for item in obj):
            digest.update(item_hash.encode())
    elif isinstance(obj, types.CodeType):
        _feed_code(digest, obj)
    elif hasattr(obj, "model_dump"):  # pydantic model
        _feed(digest, obj.model_dump(mode="json"))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(digest, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        import cloudpickle

        digest.update(cloudpickle.dumps(obj))


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(json.dumps(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(repr(const).encode())


def task_fingerprint(task: Any) -> str:
    """A hash of the task's name and code: a changed function gets a new fingerprint."""
    code = getattr(task.fn, "__code__", None)
    return stable_hash(task.name, code if code is not None else repr(task.fn))


def task_input_hash(context: CacheContext, parameters: dict[str, Any]) -> str:
    """A cache key from the task's identity and code and its inputs.

    Use as ``@task(cache_key_fn=task_input_hash)``: two calls with equal
    inputs share a result, in any process; changing the function's code
    invalidates it.
    """
    return stable_hash(task_fingerprint(context.task), parameters)


class _Inputs:
    """The INPUTS part of a policy: the call's parameters, less the ``exclude``d names."""

    __slots__ = ("exclude",)

    def __init__(self, exclude: frozenset[str] = frozenset()) -> None:
        self.exclude = exclude

    def __call__(self, context: CacheContext, parameters: dict[str, Any]) -> Any:
        if not self.exclude:
            return parameters
        return {name: value for name, value in parameters.items() if name not in self.exclude}


class CachePolicy:
    """How to compute a cache key; combine policies with ``+``, leave a parameter out with ``-``.

    ``DEFAULT - "client"`` keys on every input but ``client`` (as in Prefect;
    subtracting from a policy without INPUTS changes nothing).
    """

    def __init__(self, name: str, parts: tuple[Callable[[CacheContext, dict[str, Any]], Any], ...]) -> None:
        self.name = name
        self.parts = parts

    def __repr__(self) -> str:
        return self.name

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if not self.parts or not other.parts:  # NONE absorbs: nothing is cached
            return NONE
        return CachePolicy(f"{self.name} + {other.name}", self.parts + other.parts)

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            return NotImplemented
        if not any(isinstance(part, _Inputs) for part in self.parts):
            return self
        parts = tuple(_Inputs(part.exclude | {name}) if isinstance(part, _Inputs) else part for part in self.parts)
        return CachePolicy(f"{self.name} - {name!r}", parts)

    def compute_key(self, context: CacheContext, parameters: dict[str, Any]) -> str | None:
        """The key for a call, or None (do not cache)."""
        if not self.parts:
            return None
        return stable_hash(*(part(context, parameters) for part in self.parts))


INPUTS = CachePolicy("INPUTS", (_Inputs(),))
TASK_SOURCE = CachePolicy("TASK_SOURCE", (lambda ctx, params: task_fingerprint(ctx.task),))
RUN_ID = CachePolicy("RUN_ID", (lambda ctx, params: ctx.flow_run.id if ctx.flow_run else None,))
FLOW_PARAMETERS = CachePolicy("FLOW_PARAMETERS", (lambda ctx, params: ctx.flow_run.parameters_key() if ctx.flow_run else None,))
NONE = CachePolicy("NONE", ())
NO_CACHE = NONE  # Prefect's other name for it
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID
