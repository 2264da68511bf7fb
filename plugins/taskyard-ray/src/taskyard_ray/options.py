"""Per-submission Ray options: ``with ray_options(runtime_env=...): task.submit(...)``.

The options live in a :mod:`contextvars` variable that :class:`RayTaskRunner`
reads when a call is submitted (in the flow's thread, where ``submit`` and
``map`` run), the way ``dask_options`` works for the Dask runner. They are
Ray's escape hatch; what a run *needs* is said once, for every runner, with
``@task(resources=...)`` (see :func:`remote_options`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from taskyard.runners.base import LayeredOptions

__all__ = ("ray_options", "current_ray_options", "remote_options")

_options = LayeredOptions("taskyard_ray_options", merged=("runtime_env", "resources"))


@contextlib.contextmanager
def ray_options(
    *,
    runtime_env: Mapping[str, Any] | None = None,
    scheduling_strategy: Any = None,
    resources: Mapping[str, float] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: float | None = None,
) -> Iterator[Mapping[str, Any]]:
    """Apply Ray options to the runs submitted inside the block.

    Blocks nest: inner values win; ``runtime_env`` and ``resources`` are
    merged key by key. Values given here win over what the task's
    ``resources=`` asks for. Retries are not a Ray option here: taskyard's
    own ``retries`` apply (Ray's ``max_retries`` is always 0).

    Args:
        runtime_env: A Ray runtime environment for the runs
            (``{"env_vars": {...}}``, ``{"pip": [...]}``, ...).
        scheduling_strategy: A Ray scheduling strategy (``"SPREAD"``,
            ``NodeAffinitySchedulingStrategy(...)``, a placement group strategy).
        resources: Custom Ray resources each run needs (``{"accelerator": 1}``).
        num_cpus: CPUs each run holds (Ray's default is 1).
        num_gpus: GPUs each run holds.
        memory: Bytes of memory each run reserves.

    Example::

        with ray_options(runtime_env={"env_vars": {"MODE": "fast"}}, scheduling_strategy="SPREAD"):
            futures = work.map(items)
    """
    given: dict[str, Any] = {
        "runtime_env": runtime_env,
        "scheduling_strategy": scheduling_strategy,
        "resources": resources,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "memory": memory,
    }
    with _options.layer(given) as merged:
        yield merged


def current_ray_options() -> Mapping[str, Any]:
    """The options of the enclosing ``ray_options`` blocks (empty outside any)."""
    return _options.current()


def remote_options(request: Mapping[str, float], given: Mapping[str, Any]) -> dict[str, Any]:
    """Ray ``.options(...)`` for a run: its resource request, then the ``ray_options`` in force.

    ``cpu`` → ``num_cpus``, ``gpu`` → ``num_gpus``, ``memory`` (bytes) →
    ``memory``, any other name → an entry of ``resources``.
    """
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, amount in request.items():
        if name == "cpu":
            options["num_cpus"] = amount
        elif name == "gpu":
            options["num_gpus"] = amount
        elif name == "memory":
            options["memory"] = int(amount)
        else:
            custom[name] = amount
    for key, value in given.items():
        if key == "resources":
            custom.update(value)
        else:
            options[key] = value
    if custom:
        options["resources"] = custom
    return options
