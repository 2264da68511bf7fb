"""Run options shared by tasks and flows: checked once, when they are set.

Every option is validated at decoration (and in ``with_options``), so a bad
value fails where it is written, naming the option — never halfway through a
run.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from taskyard.batching import check_batch_size
from taskyard.resources import parse_resources

__all__ = ("TaskOptions", "Hooks", "HookOption", "hooks_list", "raw_hooks", "check_retries", "check_timeout", "format_name", "call_name_fn")

_TASK_DEFAULTS: dict[str, Any] = {
    "name": None,
    "description": None,
    "tags": None,
    "version": None,
    "task_run_name": None,
    "retries": 0,
    "retry_delay_seconds": 0,
    "retry_jitter_factor": None,
    "retry_condition_fn": None,
    "timeout_seconds": None,
    "cache_key_fn": None,
    "cache_policy": None,
    "cache_expiration": None,
    "refresh_cache": None,
    "persist_result": None,
    "result_storage": None,
    "result_serializer": None,
    "result_storage_key": None,
    "log_prints": None,
    "cache_result_in_memory": True,
    "on_completion": None,
    "on_failure": None,
    "on_commit": None,
    "on_rollback": None,
    "viz_return_value": None,
    "max_concurrency": None,
    "resources": None,
    "batch_size": None,
}
# Stored as ``<name>_hooks``: the names themselves are decorator methods (Prefect's).
_HOOK_METHODS = frozenset({"on_commit", "on_rollback"})


def hooks_list(value: Any, option: str) -> tuple[Callable[..., object], ...]:
    """A hook option as a tuple of callables (one callable is accepted too)."""
    if value is None:
        return ()
    hooks = (value,) if callable(value) else tuple(value)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"{option} must be a callable or a list of callables; {hook!r} is not callable")
    return hooks


class Hooks(tuple[Callable[..., object], ...]):
    """The hooks of one kind on a task or flow: a tuple, and a decorator that adds one.

    ``@my_task.on_completion`` (or ``.on_failure``; flows also have
    ``on_running``, ``on_cancellation``, ``on_crashed``) registers the
    decorated function as a hook and returns it unchanged, as in Prefect.
    """

    _owner: Any
    _option: str

    def __call__(self, fn: Callable[..., object]) -> Callable[..., object]:
        if not callable(fn):
            raise TypeError(f"{self._option} registers a callable hook, not {fn!r}")
        hooks = (*self, fn)
        self._owner.options[self._option] = hooks
        setattr(self._owner, self._option, hooks)
        return fn


class HookOption:
    """A hook option as an attribute: set with one callable or a list; read as :class:`Hooks`."""

    def __init__(self, option: str) -> None:
        self.option = option
        self.slot = f"_{option}_hooks"

    def __get__(self, owner: Any, owner_type: Any = None) -> Any:
        if owner is None:
            return self
        hooks = Hooks(owner.__dict__.get(self.slot, ()))
        hooks._owner = owner
        hooks._option = self.option
        return hooks

    def __set__(self, owner: Any, value: Any) -> None:
        owner.__dict__[self.slot] = hooks_list(value, self.option)


def raw_hooks(owner: Any, option: str) -> tuple[Callable[..., object], ...]:
    """The hooks set for ``option`` as a plain tuple: the engine's fast path, once per run."""
    hooks: tuple[Callable[..., object], ...] = owner.__dict__.get(f"_{option}_hooks", ())
    return hooks


def check_retries(retries: Any, delay: Any, jitter: Any, owner: str) -> Any:
    """``retry_delay_seconds`` as a number or a list, or a clear error for a bad retry option.

    A callable delay is called once, here, with the number of retries, and
    must return the list of delays (as in Prefect: ``exponential_backoff(10)``
    with ``retries=3`` gives ``[10, 20, 40]``).
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"{owner}: retries must be a whole number ≥ 0, not {retries!r}")
    if callable(delay):
        produced = delay(retries)
        if isinstance(produced, (int, float)) and not isinstance(produced, bool):
            produced = [produced]
        if not isinstance(produced, Sequence) or isinstance(produced, str):
            raise TypeError(
                f"{owner}: a callable retry_delay_seconds is called with the number of retries and must "
                f"return the list of delays (like exponential_backoff(10)); it returned {produced!r}"
            )
        delay = list(produced)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        if delay < 0:
            raise ValueError(f"{owner}: retry_delay_seconds must be ≥ 0, not {delay!r}")
    elif isinstance(delay, Sequence) and not isinstance(delay, str):
        bad = [d for d in delay if not isinstance(d, (int, float)) or d < 0]
        if bad:
            raise ValueError(f"{owner}: retry_delay_seconds must hold numbers ≥ 0; {bad[0]!r} is not")
    else:
        raise TypeError(f"{owner}: retry_delay_seconds must be a number, a list of numbers or a callable, not {delay!r}")
    if jitter is not None and (not isinstance(jitter, (int, float)) or jitter < 0):
        raise ValueError(f"{owner}: retry_jitter_factor must be a number ≥ 0, not {jitter!r}")
    return delay


def check_timeout(timeout: Any, owner: str) -> float | None:
    """``timeout_seconds`` as a float, or a clear error for one that is not > 0."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"{owner}: timeout_seconds must be a number > 0, not {timeout!r}")
    return float(timeout)


def check_template(template: Any, names: Iterable[str], option: str, owner: str, open_ended: bool) -> None:
    """Check a run-name template names only parameters the function has."""
    if template is None or callable(template):
        return
    if not isinstance(template, str):
        raise TypeError(f"{owner}: {option} must be a string template or a callable, not {template!r}")
    known = set(names)
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        root = field.split(".")[0].split("[")[0]
        if root and root not in known and not open_ended:
            raise ValueError(
                f"{owner}: {option}={template!r} refers to {{{root}}}, which is not a parameter "
                f"(parameters: {', '.join(sorted(known)) or 'none'})"
            )


def check_result_options(storage: Any, serializer: Any, owner: str) -> None:
    """Fail at decoration for an unknown serializer or an unusable storage."""
    from taskyard.results import check_storage, get_serializer

    try:
        get_serializer(serializer)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{owner}: {exc}") from None
    try:
        check_storage(storage, owner)
    except TypeError as exc:
        raise TypeError(f"{owner}: {exc}") from None


def check_cache_options(key_fn: Any, policy: Any, expiration: Any, owner: str) -> None:
    """Check cache_key_fn, cache_policy and cache_expiration."""
    from datetime import timedelta

    from taskyard.caching import CachePolicy

    if key_fn is not None and not callable(key_fn):
        raise TypeError(f"{owner}: cache_key_fn must be callable as fn(context, parameters), not {key_fn!r}")
    if policy is not None and not isinstance(policy, CachePolicy):
        raise TypeError(f"{owner}: cache_policy must be a CachePolicy (INPUTS, TASK_SOURCE, ... combined with +), not {policy!r}")
    if expiration is not None:
        seconds = expiration.total_seconds() if isinstance(expiration, timedelta) else expiration
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"{owner}: cache_expiration must be a positive timedelta or number of seconds, not {expiration!r}")


def call_name_fn(fn: Callable[[], Any], option: str) -> str:
    """Call a ``task_run_name`` / ``flow_run_name`` callable; it must return a string.

    Raises:
        TypeError: It returned something else (None included), as in Prefect.
    """
    name = fn()
    if not isinstance(name, str):
        raise TypeError(f"the {option} callable {fn!r} returned {type(name).__name__} {name!r}; it must return a string")
    return name


def format_name(template: str, params: dict[str, Any]) -> str:
    """Apply a run-name template to a call's parameters.

    Raises:
        ValueError: The template names something the call does not have.
    """
    try:
        return template.format(**params)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the run-name template {template!r} does not fit this call's arguments "
            f"({type(exc).__name__}: {exc}); arguments: {', '.join(params) or 'none'}"
        ) from None


class TaskOptions:
    """The options of a task, validated, as attributes."""

    name: str
    description: str | None
    tags: set[str]
    version: str | None
    task_run_name: str | Callable[[], str] | None
    retries: int
    retry_delay_seconds: float | Sequence[float]
    retry_jitter_factor: float | None
    retry_condition_fn: Callable[..., bool] | None
    timeout_seconds: float | None
    cache_key_fn: Callable[..., str | None] | None
    cache_policy: Any
    cache_expiration: Any
    refresh_cache: bool | None
    persist_result: bool | None
    result_storage: Any
    result_serializer: Any
    result_storage_key: str | None
    log_prints: bool | None
    cache_result_in_memory: bool
    on_completion = HookOption("on_completion")
    on_failure = HookOption("on_failure")
    on_commit_hooks: tuple[Callable[..., object], ...]
    on_rollback_hooks: tuple[Callable[..., object], ...]
    viz_return_value: Any
    max_concurrency: int | None
    resources: dict[str, float]
    batch_size: int | None
    options: dict[str, Any]

    binder: Any

    def set_options(self, options: dict[str, Any]) -> None:
        unknown = set(options) - set(_TASK_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}; known: {', '.join(_TASK_DEFAULTS)}")
        values = {**_TASK_DEFAULTS, **options}
        self.options = dict(options)
        owner = f"task {values['name']!r}"
        for key, value in values.items():
            if key in _HOOK_METHODS:
                setattr(self, f"{key}_hooks", hooks_list(value, key))
            else:
                setattr(self, key, value)
        self.tags = set(values["tags"] or ())
        self.retry_delay_seconds = check_retries(self.retries, self.retry_delay_seconds, self.retry_jitter_factor, owner)
        self.timeout_seconds = check_timeout(self.timeout_seconds, owner)
        if self.retry_condition_fn is not None and not callable(self.retry_condition_fn):
            raise TypeError(f"{owner}: retry_condition_fn must be callable, not {self.retry_condition_fn!r}")
        limit = self.max_concurrency
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{owner}: max_concurrency must be a whole number ≥ 1, not {limit!r}")
        self.resources = parse_resources(values["resources"], f"{owner}: resources")
        self.batch_size = check_batch_size(self.batch_size, owner)
        open_ended = not self.binder.simple
        check_template(self.task_run_name, self.binder.all_names, "task_run_name", owner, open_ended)
        check_template(self.result_storage_key, self.binder.all_names, "result_storage_key", owner, open_ended)
        check_result_options(self.result_storage, self.result_serializer, owner)
        check_cache_options(self.cache_key_fn, self.cache_policy, self.cache_expiration, owner)
