"""Prefect's import path for cache policies: ``from taskyard.cache_policies import INPUTS``.

A re-export of :mod:`taskyard.caching` (``NO_CACHE`` and ``NONE`` are one policy, as in Prefect).
"""

from taskyard.caching import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheContext,
    CachePolicy,
)

__all__ = ("CachePolicy", "CacheContext", "DEFAULT", "INPUTS", "TASK_SOURCE", "RUN_ID", "FLOW_PARAMETERS", "NONE", "NO_CACHE")
