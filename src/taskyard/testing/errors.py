"""What the contract's failing tasks raise."""

from __future__ import annotations

__all__ = ("ContractError",)


class ContractError(Exception):
    """The exception the contract's failing tasks raise (picklable, distinct)."""
