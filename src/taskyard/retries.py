"""Retry delay helpers."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ("exponential_backoff",)


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Delays that double, for ``retry_delay_seconds``: ``backoff_factor * 2**n`` before retry ``n``.

    Returns a callable that takes the number of retries and returns the list
    of delays, as Prefect's does: ``exponential_backoff(10)(3) == [10, 20, 40]``.
    ``@task(retries=3, retry_delay_seconds=exponential_backoff(0.1))`` waits
    0.1, 0.2 and 0.4 seconds.
    """
    if backoff_factor < 0:
        raise ValueError(f"backoff_factor must be ≥ 0, not {backoff_factor!r}")

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(retries)]

    delays.__qualname__ = f"exponential_backoff({backoff_factor})"
    return delays
