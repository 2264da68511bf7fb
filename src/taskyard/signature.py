"""Binding call arguments to parameter names, fast, and back again.

Tasks are called thousands of times a second, so the common case — a
function with only ordinary parameters — binds with a dict and a few checks
instead of ``inspect.Signature.bind``. Other signatures (positional-only,
``*args``, ``**kwargs``) fall back to ``inspect``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ("Binder",)

_P = inspect.Parameter


class Binder:
    """Binds ``(args, kwargs)`` to ``{name: value}`` for one function, and splits it back."""

    __slots__ = ("signature", "names", "all_names", "required", "defaults", "simple", "qualname", "var_keyword")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.qualname = getattr(fn, "__qualname__", repr(fn))
        self.simple = all(p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY) for p in params)
        self.names = tuple(p.name for p in params if p.kind is _P.POSITIONAL_OR_KEYWORD)
        self.all_names = frozenset(p.name for p in params)
        self.required = tuple(p.name for p in params if p.default is _P.empty and p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD))
        self.defaults = {p.name: p.default for p in params if p.default is not _P.empty}
        self.var_keyword = next((p.name for p in params if p.kind is _P.VAR_KEYWORD), None)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """``{name: value}`` for the given arguments (defaults not filled in).

        Raises:
            TypeError: The arguments do not fit the signature.
        """
        if not self.simple:
            try:
                return dict(self.signature.bind(*args, **kwargs).arguments)
            except TypeError as exc:
                raise TypeError(f"{self.qualname}(): {exc}") from None
        if len(args) > len(self.names):
            raise TypeError(f"{self.qualname}() takes {len(self.names)} positional arguments but {len(args)} were given")
        params = dict(zip(self.names, args, strict=False)) if args else {}
        if kwargs:
            for key in kwargs:
                if key in params:
                    raise TypeError(f"{self.qualname}() got multiple values for argument {key!r}")
                if key not in self.all_names:
                    raise TypeError(f"{self.qualname}() got an unexpected keyword argument {key!r}")
            params.update(kwargs)
        if len(params) < len(self.required) or not all(name in params for name in self.required):
            missing = [name for name in self.required if name not in params]
            if missing:
                raise TypeError(f"{self.qualname}() missing required argument(s): {', '.join(map(repr, missing))}")
        return params

    def split(self, params: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The ``(args, kwargs)`` to call the function with, from bound parameters."""
        if self.simple:
            return (), params
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = True
        for p in self.signature.parameters.values():
            if p.name not in params:
                positional = positional and p.kind is not _P.POSITIONAL_OR_KEYWORD
                continue
            value = params[p.name]
            if p.kind is _P.POSITIONAL_ONLY:
                args.append(value)
            elif p.kind is _P.VAR_POSITIONAL:
                args.extend(value)
            elif p.kind is _P.VAR_KEYWORD:
                kwargs.update(value)
            elif p.kind is _P.POSITIONAL_OR_KEYWORD and positional:
                args.append(value)
            else:
                kwargs[p.name] = value
        return tuple(args), kwargs

    def with_defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        """The bound parameters with every default filled in."""
        return {**self.defaults, **params} if self.defaults else params
