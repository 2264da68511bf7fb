"""A deployment: a flow, a name, default parameters and schedules, ready to be served."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskyard.background.schedules import Schedule, make_schedules

__all__ = ("Deployment", "make_deployment")


class Deployment:
    """What ``Flow.to_deployment`` returns and :func:`taskyard.serve` serves.

    Attributes:
        flow: The flow.
        name: The deployment's name; runs are recorded under
            ``full_name`` = ``"<flow name>/<name>"``, the name
            ``start_flow_run`` and ``taskyard runs ls`` use.
        schedules: When its runs start (empty: only when started by name).
        parameters: Default parameters of its runs.
        paused: Its schedules start nothing (runs started by name still run).
        tags: Tags of its runs.
        description: Shown nowhere yet; kept with the deployment.
    """

    def __init__(
        self,
        flow: Any,
        name: str,
        schedules: list[Schedule],
        parameters: dict[str, Any],
        paused: bool,
        tags: list[str],
        description: str | None,
    ) -> None:
        self.flow = flow
        self.name = name
        self.schedules = schedules
        self.parameters = parameters
        self.paused = paused
        self.tags = tags
        self.description = description

    @property
    def full_name(self) -> str:
        """``"<flow name>/<deployment name>"``."""
        return f"{self.flow.name}/{self.name}"

    def __repr__(self) -> str:
        shown = ", ".join(s.describe() for s in self.schedules) or "no schedule"
        return f"<Deployment {self.full_name!r} ({shown}{', paused' if self.paused else ''})>"


def make_deployment(
    flow: Any,
    name: str | None,
    *,
    interval: Any = None,
    cron: Any = None,
    parameters: dict[str, Any] | None = None,
    paused: bool | None = None,
    tags: Iterable[str] | None = None,
    description: str | None = None,
) -> Deployment:
    """Check everything a deployment is made of, so a mistake fails here and not at the first run.

    Raises:
        ValueError: A bad name, schedule, or parameters that do not fit the flow.
        TypeError: Parameters of the wrong kind.
    """
    name = flow.name if name is None else name
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ValueError(f"a deployment name must be a non-empty string without '/', not {name!r}")
    schedules = make_schedules(interval, cron)
    if parameters is not None and not isinstance(parameters, dict):
        raise TypeError(f"parameters must be a dict of the flow's parameters, not {parameters!r}")
    params = dict(parameters or {})
    unknown = sorted(set(params) - set(flow.binder.all_names)) if flow.binder.var_keyword is None else []
    if unknown:
        raise ValueError(f"flow {flow.name!r} has no parameter {unknown[0]!r} (deployment {name!r})")
    if schedules:
        try:  # a scheduled run gets only these parameters: they must be enough
            bound = flow.binder.bind((), params)
        except TypeError as exc:
            raise ValueError(f"deployment {name!r} of flow {flow.name!r} runs on a schedule, but {exc}; give it in parameters=") from None
        if flow.should_validate_parameters:
            flow._validator(bound)
    return Deployment(flow, name, schedules, params, bool(paused), sorted(set(tags or ())), description)
