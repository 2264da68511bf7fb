"""Resource requests and capacities: ``{"cpu": 2, "gpu": 1, "memory": "4 GiB", "label": 1}``.

One request format for every runner. ``@task(resources=...)`` asks for what
one run needs; a local runner's ``resources=`` declares what it has. Both are
parsed here into a plain ``dict[str, float]``:

* ``"cpu"``, ``"gpu"``: numbers ≥ 0 (fractions allowed, as on Ray);
* ``"memory"``: bytes, as a number or a string with a unit
  (``"4 GiB"``, ``"512MB"``, ``"2e9"``; ``KB``/``MB``/``GB`` are powers of
  1000, ``KiB``/``MiB``/``GiB`` powers of 1024), rounded up to whole bytes;
* any other name: a custom resource, a number ≥ 0, the name kept as written.

The standard names are lowercase; ``"GPU"`` is refused (with the fix) rather
than taken for a custom resource, so a request means the same on every
runner. Runners turn the dict into their backend's terms; :func:`shortfall`
is the one check of a request against what a runner can ever offer.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = (
    "STANDARD",
    "parse_resources",
    "parse_memory",
    "shortfall",
    "format_amount",
    "machine_memory",
    "local_capacity",
)

STANDARD = ("cpu", "gpu", "memory")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "p": 10**15,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_MEMORY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*")
_EXAMPLE = '{"cpu": 2, "gpu": 1, "memory": "4 GiB", "my_label": 1}'


def parse_memory(value: Any) -> float:
    """An amount of memory in whole bytes, from a number or a string like ``"4 GiB"``.

    Raises:
        ValueError: The string does not parse, or the amount is negative.
        TypeError: The value is neither a number nor a string.
    """
    try:
        return _memory(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"memory {exc}") from None


def _memory(value: Any) -> float:
    if not isinstance(value, str):
        return float(math.ceil(_number(value)))
    match = _MEMORY.fullmatch(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{value!r} does not parse: write bytes as a number, or a number and a unit "
            '("4 GiB", "512MB", "2e9"; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)'
        )
    amount = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(amount):
        raise ValueError(f"{value!r} is not a finite amount of bytes")
    return float(math.ceil(amount))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"must be a number ≥ 0, not {value!r}")
    amount = float(value)
    if amount < 0 or not math.isfinite(amount):
        raise ValueError(f"must be a finite number ≥ 0, not {value!r}")
    return amount


def parse_resources(value: Mapping[str, Any] | None, option: str = "resources") -> dict[str, float]:
    """A resource mapping, checked and normalised to ``{name: amount}``.

    Args:
        value: ``{"cpu": 2, "gpu": 1, "memory": "4 GiB", "my_label": 1}`` or None.
        option: What to call the mapping in errors (``"task 'train': resources"``).

    Returns:
        A new dict; empty for None. Memory is in bytes.

    Raises:
        TypeError: Not a mapping, a name that is not a string, or an amount
            that is not a number.
        ValueError: A negative or unparsable amount, or a standard name not
            in lowercase.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{option} must be a dict of resource name → amount, like {_EXAMPLE}; not {value!r}")
    parsed: dict[str, float] = {}
    for key, amount in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{option}: resource names must be non-empty strings, not {key!r} (e.g. {_EXAMPLE})")
        if key != key.lower() and key.lower() in STANDARD:
            raise ValueError(
                f"{option}: write {key.lower()!r}, not {key!r}; the standard names are lowercase (cpu, gpu, memory)"
            )
        try:
            parsed[key] = _memory(amount) if key == "memory" else _number(amount)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{option}[{key!r}] {exc}") from None
    return parsed


def format_amount(name: str, amount: float) -> str:
    """``gpu=1``, ``memory=4 GiB``: an amount as people write it."""
    if math.isinf(amount):
        return f"{name}=unlimited"
    if name == "memory":
        for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if amount >= size:
                return f"memory={amount / size:.4g} {unit}"
        return f"memory={amount:.0f} B"
    return f"{name}={amount:g}"


_LOCAL_FIX = "or declare more in the runner's constructor: resources={{{name!r}: ...}}"


def shortfall(
    request: Mapping[str, float], capacity: Mapping[str, float], where: str, fix: str = _LOCAL_FIX
) -> str | None:
    """Why ``request`` can never be met by ``capacity``, or None if it can.

    A resource missing from ``capacity`` has none. The message names the
    resource, the request and the capacity; ``where`` says whose capacity
    (``"the runner"``, ``"the largest Dask worker"``) and ``fix`` how to
    give it more (a ``str.format`` template; ``{name}`` is the resource).
    """
    for name, amount in request.items():
        have = capacity.get(name, 0.0)
        if amount > have * (1 + 1e-9) + 1e-9:
            offered = format_amount(name, have) if name in capacity else f"no {name!r}"
            return (
                f"it asks for {format_amount(name, amount)} but {where} has {offered} "
                f"(capacity: {_shown(capacity)}); ask for less, {fix.format(name=name)}"
            )
    return None


def _shown(capacity: Mapping[str, float]) -> str:
    return ", ".join(format_amount(k, v) for k, v in sorted(capacity.items())) or "none"


def machine_memory() -> float:
    """This machine's physical memory in bytes (0 if the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0.0


def local_capacity(resources: Mapping[str, Any] | None, workers: int) -> dict[str, float]:
    """A local runner's capacity: what it declares, over the defaults.

    Defaults: ``cpu`` is the runner's worker count, ``memory`` this machine's
    physical memory; ``gpu`` and custom resources are absent (none) unless
    declared.

    Raises:
        TypeError, ValueError: As :func:`parse_resources`, naming the
            runner's ``resources`` argument.
    """
    declared = parse_resources(resources, "the runner's resources")
    capacity = {"cpu": float(workers)}
    memory = machine_memory()
    if memory:
        capacity["memory"] = memory
    capacity.update(declared)
    return capacity
