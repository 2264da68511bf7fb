"""Learning that runs finished: Ray's completion callbacks, and the settler thread that acts on them.

::

    a run (or batch) placed ── header ObjectRef ── Arrivals.when_ready(header, item)
        driver:      header._on_ready(cb) — Ray calls back (its own thread) once the header
                     exists, without reading it; the settler reads the headers that
                     arrived together in one ray.get
        Ray Client:  header.future() — the client reads each header as it arrives
                                   │ (item, None | what arrived)
                                   ▼ a queue
    settler thread ── takes what is queued (up to BATCH), reads the headers, hands
                     [(item, Arrived)] to settle(); with nothing queued for a while,
                     asks idle() whether Ray is still there

Why not ``future()`` everywhere: it reads and deserialises every header on
Ray's own callback thread, one at a time, and wraps it in a Future; with
thousands of short runs that thread was the flow process's busiest (about
0.15 ms a run), and it competes for the GIL with the thread submitting the
map. ``_on_ready`` (Ray ≥ 2.4x, no public equivalent) only says the object
exists; a ``ray.get`` of a thousand small headers at once costs far less
than a thousand reads. Ray Client has no ``_on_ready``, so a ``ray://``
connection keeps ``future()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ("Arrivals", "Arrived")

logger = logging.getLogger("taskyard.ray")

_I = TypeVar("_I")

# The settler takes at most this many arrivals at once.
BATCH = 1000
# With more than this many headers awaited and fewer arrived, the settler waits _GATHER_S for more.
_BUSY = 32
_GATHER_S = 0.002
# How long reading the headers that arrived may take (they exist: only a lost cluster makes this wait).
_READ_TIMEOUT_S = 60.0


class Arrived:
    """What a header held: its value, or the error Ray gives for it (read like a finished Future)."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        """The header's value; raises the error it holds."""
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> BaseException | None:
        """The error the header holds, or None."""
        return self._error


class Arrivals(Generic[_I]):
    """The headers a runner waits for, and its settler thread.

    Args:
        ray: The ``ray`` module.
        settle: Called on the settler thread with ``[(item, Arrived)]``, in
            the order they arrived.
        idle: Called when nothing arrived for ``idle_after`` seconds;
            returning False ends the settler.
        callbacks: ``"ready"`` (a driver: ``_on_ready`` and batched reads) or
            ``"future"`` (Ray Client: ``future()``).
        idle_after: Seconds without an arrival before ``idle()`` is asked.
    """

    def __init__(
        self,
        ray: Any,
        settle: Callable[[list[tuple[_I, Arrived]]], None],
        idle: Callable[[], bool],
        callbacks: str = "ready",
        idle_after: float = 2.0,
    ) -> None:
        self._ray = ray
        self._settle = settle
        self._idle = idle
        self._idle_after = idle_after
        self._ready = callbacks == "ready" and hasattr(ray.ObjectRef, "_on_ready")
        self._queue: queue.SimpleQueue[tuple[_I, Any, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="taskyard-ray-settler", daemon=True)
        self._lock = threading.Lock()
        self._waiting = 0  # headers asked for and not yet settled

    def start(self) -> Arrivals[_I]:
        """Start the settler thread; returns self."""
        self._thread.start()
        return self

    def when_ready(self, header: Any, item: _I) -> None:
        """Hand ``item`` to ``settle`` once Ray has ``header`` (the ObjectRef of a run's or batch's header)."""
        put = self._queue.put
        with self._lock:
            self._waiting += 1
        if self._ready:
            header._on_ready(lambda error: put((item, header, error)))
        else:
            header.future().add_done_callback(lambda done: put((item, None, done)))

    def stop(self, timeout: float) -> None:
        """End the settler after what is queued now (waits up to ``timeout`` s for it)."""
        self._queue.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        arrivals = self._queue
        while True:
            try:
                first = arrivals.get(timeout=self._idle_after)
            except queue.Empty:
                if not self._idle():
                    return
                continue
            if first is not None and self._waiting > _BUSY and arrivals.qsize() < _BUSY:
                # Many runs out, few in: let more come, to read and settle them together (a map of short runs).
                time.sleep(_GATHER_S)
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(arrivals.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            with self._lock:
                self._waiting -= len(items)
            if items:
                self._settle(self._read(items))
            if None in batch:  # stopping
                return

    def _read(self, items: list[tuple[_I, Any, Any]]) -> list[tuple[_I, Arrived]]:
        """What each header holds: the ones that exist are read with one ``ray.get``."""
        read: list[tuple[_I, Arrived]] = []
        pending: list[int] = []
        for item, header, outcome in items:
            if header is None:  # a finished Future (Ray Client)
                error = outcome.exception()
                read.append((item, Arrived(None if error is not None else outcome.result(), error)))
            elif outcome is not None:  # Ray could not wait for it
                read.append((item, Arrived(error=outcome)))
            else:
                pending.append(len(read))
                read.append((item, Arrived()))
        if not pending:
            return read
        headers = [items[i][1] for i in pending]
        try:
            values = self._ray.get(headers, timeout=_READ_TIMEOUT_S)
        except (Exception, SystemExit):  # one of them holds an error (a lost worker): read each alone
            values = None
        for k, i in enumerate(pending):
            if values is not None:
                read[i] = (read[i][0], Arrived(values[k]))
                continue
            try:
                read[i] = (read[i][0], Arrived(self._ray.get(headers[k], timeout=_READ_TIMEOUT_S)))
            except (Exception, SystemExit) as exc:  # SystemExit: Ray was shut down in this process
                read[i] = (read[i][0], Arrived(error=exc))
        return read
