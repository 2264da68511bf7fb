"""Where the engine asks: is this call cached, and where does its result go?

The engine calls :func:`result_plan` once per task call; when the task uses
no cache and does not persist (the default) it returns None and costs
nothing more. Otherwise the plan knows the cache key, the storage, the
serializer and the record's key, and does the lookup and the write.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from taskyard.caching import NONE, CacheContext
from taskyard.exceptions import TaskyardError
from taskyard.options import format_name
from taskyard.results import CorruptResultError, PersistedResult, decode, encode, get_serializer, get_storage
from taskyard.settings import current_settings
from taskyard.signing import result_key

__all__ = ("ResultPlan", "result_plan", "CacheKeyError", "MISS")

logger = logging.getLogger("taskyard.results")
MISS = object()


class CacheKeyError(TaskyardError):
    """A task's cache_key_fn or cache_policy raised."""


class ResultPlan:
    """The cache key and result destination of one task call."""

    def __init__(self, task: Any, call: Any, params: dict[str, Any], cache_key: str | None, persist: bool, home: str) -> None:
        self.task = task
        self.home = home
        self.cache_key = cache_key
        self.persist = persist
        flow_run = call.flow_run
        storage = task.result_storage if task.result_storage is not None else getattr(flow_run, "result_storage", None)
        serializer = task.result_serializer if task.result_serializer is not None else getattr(flow_run, "result_serializer", None)
        self.storage = get_storage(storage, home)
        self.serializer = get_serializer(serializer)
        template = task.result_storage_key
        if template is not None:
            self.key = format_name(template, task.binder.with_defaults(params))
        elif cache_key is not None:
            self.key = f"cache/{cache_key}"
        else:
            self.key = call.task_run.id

    def lookup(self) -> Any:
        """The cached value, or MISS (absent, expired, or unreadable)."""
        if self.cache_key is None or self.task.refresh_cache:
            return MISS
        where = self.storage.location(self.key)
        try:
            data = self.storage.read(self.key)
            if data is None:
                return MISS
            record = decode(data, self.serializer, where, result_key(self.home))
        except CorruptResultError as exc:
            logger.warning("cache record unusable, running the task instead: %s", exc)
            return MISS
        except Exception as exc:  # storage down, unpickling failed: a miss, said out loud
            logger.warning("cache record at %s could not be read (%r); running the task instead", where, exc)
            return MISS
        if record.cache_key != self.cache_key:
            # The record's key is a template (result_storage_key) that other
            # inputs share: it holds another call's value.
            logger.info("record at %s belongs to another cache key; running the task", where)
            return MISS
        return MISS if record.expired() else record.value

    def write(self, value: Any) -> str:
        """Store the value; returns where it went."""
        expiration = self.task.cache_expiration
        expires_at = None
        if self.cache_key is not None and expiration is not None:
            seconds = expiration.total_seconds() if isinstance(expiration, timedelta) else float(expiration)
            expires_at = time.time() + seconds
        record = encode(value, self.serializer, expires_at, self.cache_key, result_key(self.home))
        return str(self.storage.write(self.key, record))

    def reference(self) -> PersistedResult:
        return PersistedResult(self.storage, self.key, self.serializer, self.home)


def result_plan(call: Any, params: dict[str, Any]) -> ResultPlan | None:
    """The plan for a call, or None when it neither caches nor persists.

    Raises:
        CacheKeyError: The cache key function or policy raised.
    """
    task = call.task
    flow_run = call.flow_run
    uses_cache = task.cache_key_fn is not None or (task.cache_policy is not None and task.cache_policy is not NONE)
    if task.persist_result is False and not uses_cache:
        return None
    default_persist = flow_run.persist_results if flow_run is not None else None
    if default_persist is None or flow_run is None or flow_run.home is None:
        settings = current_settings()
        home = str(settings.home)
        default_persist = settings.persist_results if default_persist is None else default_persist
    else:
        home = flow_run.home
    persist = task.persist_result if task.persist_result is not None else (default_persist or uses_cache)
    if not persist and not uses_cache:
        return None
    cache_key = None
    if uses_cache:
        context = CacheContext(task, call.task_run, flow_run)
        try:
            if task.cache_key_fn is not None:
                cache_key = task.cache_key_fn(context, params)
            else:
                cache_key = task.cache_policy.compute_key(context, params)
        except Exception as exc:
            option = "cache_key_fn" if task.cache_key_fn is not None else "cache_policy"
            raise CacheKeyError(f"the {option} of task {task.name!r} raised {type(exc).__name__}: {exc}") from exc
    return ResultPlan(task, call, params, cache_key, bool(persist), home)
