"""States of finished calls, handed from a worker process to the flow process through shared memory.

::

    worker process                                      flow process
    ──────────────                                      ────────────
    a call ends: its state frame ──copied into──▶ page k (shared memory; no system call)
    every FLUSH_SECONDS, at the end of a batch,
    or when page k is full, once the other page
    is free again:
      handed[k] = 1, pipe frame "page k" ─────────▶ take page k: its frames, then
      go on in the other page                         used[k] = 0, handed[k] = 0 (free again)
    the worker dies ──────────────────────────────▶ take what is left in its pages: the states
                                                      of every call that finished

A pipe write per call costs more than a no-op call itself (a system call,
and a wake-up of the flow process's reader), so states are copied into two
shared pages and handed over a page at a time. Because the pages outlive
the worker, a worker that dies loses no finished call's state — the flow
process reads them after the end-of-file — and only the call it was running
is to blame. The page being filled is never one the flow process reads: a
page is read only once handed over (or once its writer is gone).

Layout of the shared counters (a ``RawArray("q", 5)``): ``[0]`` calls the
worker has started, ``[1 + k]`` bytes used in page k, ``[3 + k]`` 1 while
page k is handed over and not yet taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ("PAGE_BYTES", "FLUSH_SECONDS", "PAGE", "StatePages", "PageWriter", "frames_in")

#: Bytes in each of a worker's two pages.
PAGE_BYTES = 1 << 20
#: A worker hands over its page at least this often while it runs calls.
FLUSH_SECONDS = 0.002
#: The pipe frame that hands over a page (its number follows).
PAGE = b"p"
STARTED = 0
_USED = 1
_HANDED = 3


def frames_in(data: bytes) -> list[bytes]:
    """The payloads of the frames in ``data`` (4-byte big-endian length, payload; complete frames only)."""
    frames, start, size = [], 0, len(data)
    while size - start >= 4:
        end = start + 4 + int.from_bytes(data[start : start + 4], "big")
        if end > size:
            break
        frames.append(data[start + 4 : end])
        start = end
    return frames


class StatePages:
    """The shared memory of one worker: its counters and its two pages (made in the flow process)."""

    __slots__ = ("counts", "pages", "_view")

    def __init__(self, ctx: Any) -> None:
        self.counts = ctx.RawArray("q", 5)
        self.pages = ctx.RawArray("B", 2 * PAGE_BYTES)
        self._view: memoryview | None = None

    def __getstate__(self) -> tuple[Any, Any]:
        return self.counts, self.pages

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.counts, self.pages = state
        self._view = None

    @property
    def view(self) -> memoryview:
        """The two pages as bytes."""
        if self._view is None:
            self._view = memoryview(self.pages).cast("B")
        return self._view

    @property
    def started(self) -> int:
        """How many calls the worker has started."""
        return int(self.counts[STARTED])

    def take(self, page: int) -> list[bytes]:
        """The state frames in a handed-over ``page``; the page is free again."""
        used = self.counts[_USED + page]
        data = bytes(self.view[page * PAGE_BYTES : page * PAGE_BYTES + used])
        self.counts[_USED + page] = 0
        self.counts[_HANDED + page] = 0
        return frames_in(data)

    def left(self) -> list[bytes]:
        """After the worker died: the state frames it left in its pages, oldest first.

        A page marked handed over whose pipe frame never came is older than
        the page the worker was filling.
        """
        order = sorted((0, 1), key=lambda page: not self.counts[_HANDED + page])
        return [frame for page in order if self.counts[_USED + page] for frame in self.take(page)]


class PageWriter:
    """The worker's side: puts each finished call's state frame in a page, hands pages over.

    The page being filled is never handed over: the writer switches only to
    a page the flow process has taken (so it never writes where the flow
    process reads), and otherwise keeps filling the one it has.
    """

    __slots__ = ("_counts", "_view", "_send", "_page", "handed_at")

    def __init__(self, pages: StatePages, send: Callable[[bytes], None]) -> None:
        self._counts, self._view, self._send = pages.counts, pages.view, send
        self._page = 0
        self.handed_at = time.perf_counter()

    def put(self, frame: bytes) -> None:
        """Keep one whole frame (length and payload) for the flow process."""
        if len(frame) > PAGE_BYTES:  # too large for a page: after what the page holds, by pipe
            self.hand_over(wait=True)
            self._send(frame)
            return
        counts, page = self._counts, self._page
        used = counts[_USED + page]
        if used + len(frame) > PAGE_BYTES:
            self.hand_over(wait=True)
            page, used = self._page, 0
        base = page * PAGE_BYTES + used
        self._view[base : base + len(frame)] = frame
        counts[_USED + page] = used + len(frame)

    def hand_over(self, wait: bool = False) -> None:
        """Hand the page being filled to the flow process, if it holds anything.

        That needs the other page taken back: if it is not, the writer goes on
        filling this one, or with ``wait`` (at the end of a batch, or with
        this page full) waits for it — the flow process has its frame and
        takes it soon; if the flow process is gone, the worker exits.
        """
        counts, page = self._counts, self._page
        if not counts[_USED + page]:
            return
        other = 1 - page
        while counts[_HANDED + other]:
            if not wait:
                return
            time.sleep(0.0002)
        counts[_HANDED + page] = 1
        self._send(_PAGE_FRAMES[page])
        self._page = other
        self.handed_at = time.perf_counter()


_PAGE_FRAMES = [(2).to_bytes(4, "big") + PAGE + bytes((page,)) for page in (0, 1)]
