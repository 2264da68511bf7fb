"""Wrappers that change how ``submit``/``map`` treat one argument."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ("unmapped", "allow_failure", "quote", "Annotation")

T = TypeVar("T")


class Annotation(Generic[T]):
    """Base of the argument wrappers; ``unwrap()`` gives back the value."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Annotation) and type(other) is type(self) and bool(other.value == self.value)

    def __hash__(self) -> int:
        return hash((type(self), id(self.value)))

    def __reduce__(self) -> tuple[type[Annotation[T]], tuple[T]]:
        return type(self), (self.value,)


class unmapped(Annotation[T]):
    """Pass an iterable to every run of ``Task.map`` whole, instead of mapping over it."""

    __slots__ = ()


class allow_failure(Annotation[T]):
    """Run the task even if this upstream fails; it then receives the upstream's exception."""

    __slots__ = ()


class quote(Annotation[T]):
    """Pass the value as it is, without looking inside it for futures (for large inputs)."""

    __slots__ = ()
