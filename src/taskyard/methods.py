"""Tasks and flows on methods: binding ``self`` or ``cls`` like the function they wrap.

``@task`` (or ``@flow``) works on an instance method, and with
``@classmethod`` / ``@staticmethod`` in either order::

    class Shop:
        @task
        def price(self, item): ...          # shop.price(...) binds the instance

        @classmethod
        @task
        def default(cls): ...               # Shop.default() binds the class

        @task
        @staticmethod
        def tax(x): ...                     # nothing is bound

Reading the task through an instance (or, for a class method, through the
class) gives a task over the bound method, with the same options; its runs
do not take ``self`` as a parameter.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

__all__ = ("unwrap_method", "bind_to")


def unwrap_method(fn: Any) -> tuple[Any, bool]:
    """``(function, binds_class)`` for a function, a classmethod or a staticmethod object."""
    if isinstance(fn, classmethod):
        return fn.__func__, True
    if isinstance(fn, staticmethod):
        return fn.__func__, False
    return fn, False


def bind_to(fn: Callable[..., Any], instance: Any, owner: Any, binds_class: bool) -> Callable[..., Any] | None:
    """``fn`` bound as attribute access would bind it, or None where nothing is bound."""
    if isinstance(fn, types.MethodType):  # already bound
        return None
    if binds_class:
        target = owner if owner is not None else type(instance)
        return types.MethodType(fn, target)
    if instance is None:
        return None
    return types.MethodType(fn, instance)
