"""Starting the runner's cluster: the class and its loopback defaults, and a start Ctrl-C may interrupt.

The start finishes in a thread, then it is closed.

A Ctrl-C (or SIGTERM, which taskyard turns into one) reaches the main thread
wherever it is. In the middle of ``LocalCluster(...)`` it leaves a half-built
cluster that nothing holds: its nannies are neither running nor closed, and
Dask's own atexit handler later fails to close it with a wall of
``AssertionError: Status.init``. So the runner builds its cluster and
client in a helper thread, which Ctrl-C does not reach, and the main thread
only waits for it. Interrupted, the main thread goes on to the runner's
shutdown, which lets the start finish and then closes what it built, the
ordinary way.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ("Start", "load_class", "cluster_kwargs", "short_debug_logs", "DEBUG_LOG_LENGTH")

#: Entries in the developer logs of the client and cluster the runner makes (see short_debug_logs).
DEBUG_LOG_LENGTH = 0
_LOG_LENGTH_KEY = "distributed.admin.low-level-log-length"


class Start:
    """Runs ``build`` in a helper thread; the caller waits, and only the caller is interrupted."""

    def __init__(self, build: Callable[[], None], name: str = "taskyard-dask-start") -> None:
        self._build = build
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._build()
        except BaseException as exc:  # handed to the caller
            self._error = exc
        finally:
            self._done.set()

    def run(self) -> None:
        """Start ``build`` and wait for it; re-raise what it raised.

        An interrupt while waiting propagates at once; the build goes on
        (see :meth:`finish`).
        """
        self._thread.start()
        self._done.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def finish(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for an interrupted build to end; True if it did."""
        return self._done.wait(timeout)


def load_class(spec: type[Any] | str) -> type[Any]:
    """The cluster class ``spec`` names (a class, or a ``"module.Class"`` string)."""
    if not isinstance(spec, str):
        return spec
    module, _, name = spec.rpartition(".")
    if not module:
        raise ValueError(f"cluster_class must be a class or a 'module.Class' string, not {spec!r}")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def cluster_kwargs(cls: type[Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Loopback-only defaults for a LocalCluster; other classes get ``given`` as is."""
    from distributed import LocalCluster

    kwargs = dict(given)
    if isinstance(cls, type) and issubclass(cls, LocalCluster):
        # processes=False talks over inproc:// (no socket), which a host would turn off.
        in_process = kwargs.get("processes") is False and "protocol" not in kwargs
        if "ip" not in kwargs and not in_process:
            kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("dashboard_address", "127.0.0.1:0")
        kwargs["scheduler_kwargs"] = {"allowed_failures": 0, **kwargs.get("scheduler_kwargs", {})}
    return kwargs


@contextlib.contextmanager
def short_debug_logs() -> Iterator[None]:
    """Dask objects made inside keep no developer logs (``distributed.admin.low-level-log-length``).

    Each connection of a Dask client or scheduler keeps the last messages it
    sent, as objects, for debugging: 1,000 by default, and more of Dask's
    logs for developers take their length from the same setting. A message
    that ships a batch holds the batch's calls, so the client's log held the
    pickled batches and the scheduler's (in the flow process, for a
    LocalCluster) the calls of the last 1,000 batches it sent each worker:
    all of a 1,000,000-call map, ~700 bytes a call. Set only while the
    runner starts; a cluster started some other way keeps its own setting.
    """
    import dask

    with dask.config.set({_LOG_LENGTH_KEY: DEBUG_LOG_LENGTH}):
        yield
