"""Prefect's ``prefect.utilities`` import paths that taskyard has (only ``annotations``)."""

__all__ = ()
