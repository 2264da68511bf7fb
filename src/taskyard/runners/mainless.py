"""Worker processes that start without the parent's ``__main__``.

A ``spawn`` or ``forkserver`` child prepared by :mod:`multiprocessing` first
imports the parent's main module (as ``__mp_main__``). For a script without
an ``if __name__ == "__main__":`` guard that re-runs the script — the flow
with it — in every worker, which fails (Dask: "Nanny failed to start"; the
standard library: "An attempt has been made to start a new process before
the current process has finished its bootstrapping phase").

Runner workers never need the main module: calls travel with cloudpickle,
which ships what ``__main__`` defines by value. So, while a runner asks for
it, the children it starts are prepared without that entry: the script runs
once, in the flow process, guard or not. Other children of the process are
prepared as usual.

* :func:`launching_without_main` — the children started *by this thread*
  inside the block (the process runner's workers).
* :func:`without_main` — children with a given process name, whichever
  thread starts them, until the returned release function is called (Dask's
  nannies start their worker processes from threads of their own, and
  restart them at any time while the cluster runs).

Where there is no main module to leave out (an interactive session, code
from stdin, a module run with ``-m`` under some start methods) nothing
changes.
"""

from __future__ import annotations

import contextlib
import multiprocessing.spawn
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ("launching_without_main", "without_main")

_MAIN_ENTRIES = ("init_main_from_path", "init_main_from_name")

_lock = threading.Lock()
_this_thread = threading.local()
_names: Counter[str] = Counter()
_original: Callable[[str], dict[str, Any]] | None = None


def _preparation_data(name: str) -> dict[str, Any]:
    assert _original is not None
    data = _original(name)
    if getattr(_this_thread, "active", 0) or _names.get(name):
        for entry in _MAIN_ENTRIES:
            data.pop(entry, None)
    return data


def _install() -> None:
    global _original
    with _lock:
        if multiprocessing.spawn.get_preparation_data is not _preparation_data:
            _original = multiprocessing.spawn.get_preparation_data
            multiprocessing.spawn.get_preparation_data = _preparation_data


@contextlib.contextmanager
def launching_without_main() -> Iterator[None]:
    """Inside the block, processes this thread starts do not import ``__main__``."""
    _install()
    _this_thread.active = getattr(_this_thread, "active", 0) + 1
    try:
        yield
    finally:
        _this_thread.active -= 1


def without_main(process_name: str) -> Callable[[], None]:
    """Processes named ``process_name`` start without ``__main__`` until the returned function is called.

    Calls nest: the name is released when every caller has released it.
    Calling the returned function again does nothing.

    Args:
        process_name: The ``name`` the backend gives its worker processes
            (``multiprocessing.Process(name=...)``).
    """
    _install()
    with _lock:
        _names[process_name] += 1
    released = False

    def release() -> None:
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _names[process_name] -= 1
            if _names[process_name] <= 0:
                del _names[process_name]

    return release
