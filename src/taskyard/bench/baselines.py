"""Raw backends: the bare pool or cluster under each runner, used the way its own docs show.

A workload's raw version speaks to a :class:`RawBackend`:

* ``submit(fn, *args)`` → a handle; ``map(fn, items, **constants)`` → handles;
* ``gather(handles)`` → values; ``share(value)`` puts a large value on the
  cluster once (Dask ``scatter``, Ray ``ray.put``) where the backend can;
* ``passes_futures`` / ``resolves_nested``: handles may be passed as
  arguments (top-level / inside lists) and resolve on the cluster (Dask,
  Ray); otherwise the workload waits for the values first;
* ``fresh()`` → a new, separately started backend of the same kind (the
  cold-start workload makes one per "flow").

Nothing here imports dask or ray until a Dask or Ray backend is made.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

__all__ = ("RawBackend", "LoopBackend", "ThreadBackend", "ProcessBackend", "DaskBackend", "RayBackend")


class RawBackend(abc.ABC):
    """The minimal surface the raw workloads need from a backend."""

    #: Handles may be passed to ``submit`` as arguments and resolve on the backend.
    passes_futures: bool = False
    #: ... also inside a list argument (Dask does; Ray resolves top-level refs only).
    resolves_nested: bool = False

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)`` and return a handle."""

    @abc.abstractmethod
    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        """Start ``fn(item, **constants)`` for each item; return one handle each."""

    @abc.abstractmethod
    def gather(self, handles: Sequence[Any]) -> list[Any]:
        """Wait for the handles and return their values, in order."""

    def result(self, handle: Any) -> Any:
        """Wait for one handle and return its value."""
        return self.gather([handle])[0]

    def share(self, value: Any) -> Any:
        """Make a large value available to every task; by default pass it as is."""
        return value

    @abc.abstractmethod
    def fresh(self) -> contextlib.AbstractContextManager[RawBackend]:
        """A new backend of the same kind, started on entry and closed on exit."""

    def close(self) -> None:  # noqa: B027 - most backends start nothing of their own
        """Release what this backend started."""


class LoopBackend(RawBackend):
    """A plain loop: the baseline of the sequential runner."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        return [fn(item, **constants) for item in items]

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[RawBackend]:
        yield LoopBackend()


class _ExecutorBackend(RawBackend):
    """Shared by the thread and process pools (``concurrent.futures``)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(fn, *args)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        call = functools.partial(fn, **constants) if constants else fn
        return [self.executor.submit(call, item) for item in items]

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return [h.result() if isinstance(h, Future) else h for h in handles]

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class ThreadBackend(_ExecutorBackend):
    """``concurrent.futures.ThreadPoolExecutor``: the baseline of the threads runner."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(ThreadPoolExecutor(max_workers))
        self.max_workers = max_workers

    @contextlib.contextmanager
    def fresh(self) -> Iterator[RawBackend]:
        backend = ThreadBackend(self.max_workers)
        try:
            yield backend
        finally:
            backend.close()


class ProcessBackend(_ExecutorBackend):
    """``concurrent.futures.ProcessPoolExecutor``: the baseline of the processes runner.

    ``map`` uses ``Executor.map`` with a chunksize (about four chunks per
    worker), as the pool's documentation advises for many small calls.
    """

    def __init__(self, max_workers: int, start_method: str) -> None:
        context = multiprocessing.get_context(start_method)
        super().__init__(ProcessPoolExecutor(max_workers, mp_context=context))
        self.max_workers = max_workers
        self.start_method = start_method

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        items = list(items)
        call = functools.partial(fn, **constants) if constants else fn
        chunksize = max(1, len(items) // (self.max_workers * 4))
        return list(self.executor.map(call, items, chunksize=chunksize))

    @contextlib.contextmanager
    def fresh(self) -> Iterator[RawBackend]:
        backend = ProcessBackend(self.max_workers, self.start_method)
        try:
            yield backend
        finally:
            backend.close()


class DaskBackend(RawBackend):
    """``distributed.Client`` ``submit``/``map`` + ``gather`` on an existing cluster.

    Args:
        client: A connected client (the one the taskyard Dask runner uses).
        address: The scheduler address, for ``fresh()`` clients.
    """

    passes_futures = True
    resolves_nested = True

    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        return list(self.client.map(fn, list(items), pure=False, **constants))

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return list(self.client.gather(list(handles)))

    def share(self, value: Any) -> Any:
        return self.client.scatter(value, broadcast=False)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[RawBackend]:
        from distributed import Client

        client = Client(self.address, set_as_default=False)  # type: ignore[no-untyped-call]
        try:
            yield DaskBackend(client, self.address)
        finally:
            client.close()  # type: ignore[no-untyped-call]


class RayBackend(RawBackend):
    """``ray.remote`` + ``ray.get`` on the running Ray instance (``ray.put`` for large values)."""

    passes_futures = True

    def __init__(self) -> None:
        import ray

        self._ray = ray
        self._remote: dict[Callable[..., Any], Any] = {}

    def _fn(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._fn(fn).remote(*args)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **constants: Any) -> list[Any]:
        remote = self._fn(fn)
        return [remote.remote(item, **constants) for item in items]

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return list(self._ray.get(list(handles)))

    def share(self, value: Any) -> Any:
        return self._ray.put(value)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[RawBackend]:
        yield RayBackend()  # a Ray driver connects once per process; nothing to start
