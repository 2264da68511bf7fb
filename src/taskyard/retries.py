"""Retry delay helpers."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ("exponential_backoff",)


def exponential_backoff(backoff_factor: float) -> Callable[[int], float]:
    """Delays that double: ``backoff_factor * 2**n`` before retry ``n`` (0, 1, 2 ...).

    Example: ``@task(retries=3, retry_delay_seconds=exponential_backoff(0.1))``
    waits 0.1, 0.2 and 0.4 seconds.
    """
    if backoff_factor < 0:
        raise ValueError(f"backoff_factor must be ≥ 0, not {backoff_factor!r}")

    def delay(n: int) -> float:
        return float(backoff_factor * 2**n)

    delay.__qualname__ = f"exponential_backoff({backoff_factor})"
    return delay
