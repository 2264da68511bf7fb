"""Lanes on the process runner: ranges of a lane's calls shipped as columns, their outcomes sent back as blocks.

::

    flow process                                     worker process
    ────────────                                     ──────────────
    lane frame: "l" + (lane key, its header the      the header kept while the lane lasts;
      first time this worker sees the lane: task,    run_columns over the range: the shared
      flow run, static arguments, column names,      counter of started calls raised per
      tags, run ids' base), first index, column ──▶  call, a block every FLUSH_SECONDS
      slices
    Lane.complete(block) ◀── page frames ◀────────── block frame: "b" + results, start and
                                                     end times, full States where needed

A worker that dies with lane calls it had not answered gives them back as
ordinary calls (:func:`as_calls`): the runner's usual accounting then
finds the one that was running, runs the others again and places them,
exactly as for any batch. The same goes for a range that will not pickle
in the flow process or not unpickle in the worker.
"""

from __future__ import annotations

import itertools
import pickle
from collections import deque
from array import array
from typing import Any

import cloudpickle

from taskyard.batching import BatchSizer
from taskyard.context import TaskRunInfo
from taskyard.engine import TaskCall
from taskyard.lane_engine import LaneRange, run_columns
from taskyard.lanes import Block, Lane, LaneFuture
from taskyard.runners.shared import load_static

__all__ = (
    "LANE", "BLOCK", "LaneHeaders", "LaneSegment", "LaneSent", "pack_range", "LaneReader", "encode_block", "decode_block", "as_calls",
)  # fmt: skip

LANE = b"l"  # flow → worker: a range of a lane's calls
BLOCK = b"b"  # worker → flow: the outcomes of calls of a lane
_keys = itertools.count(1)
# A worker keeps the headers of this many lanes, dropping the oldest first.
_HEADERS_KEPT = 4


class LaneHeaders:
    """The keys of the lanes whose headers a worker holds, as the flow process tracks them.

    The worker keeps them the same way (:class:`LaneReader`): both add in
    the order the frames go, and drop the oldest past ``_HEADERS_KEPT``.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: deque[int] = deque(maxlen=_HEADERS_KEPT)

    def __contains__(self, key: int) -> bool:
        return key in self._keys

    def add(self, key: int) -> None:
        if key not in self._keys:
            self._keys.append(key)

    def clear(self) -> None:
        self._keys.clear()


class LaneSegment:
    """The calls of a lane not yet sent to a worker: ``next`` to ``stop``."""

    __slots__ = ("lane", "static", "key", "header", "plain", "next", "stop", "sizer")

    def __init__(self, lane: Lane, sizer: BatchSizer, static: dict[str, Any]) -> None:
        self.lane, self.sizer = lane, sizer
        self.static = static  # the lane's, large values swapped for references (runners.shared)
        self.key = next(_keys)
        self.header: bytes | None = None  # pickled when first sent
        self.plain = lane.plain  # columns of built-in values pickle with pickle, others with cloudpickle
        self.next, self.stop = 0, lane.length

    def __len__(self) -> int:
        return self.stop - self.next

    def cut(self, count: int) -> LaneSent:
        """The next ``count`` calls, as a batch for a worker."""
        sent = LaneSent(self, self.next, self.next + count)
        self.next += count
        return sent


class LaneSent:
    """A range of a lane's calls a worker holds: ``next`` to ``stop`` still unanswered."""

    __slots__ = ("segment", "next", "stop", "size", "sizer", "started", "ran")

    def __init__(self, segment: LaneSegment, start: int, stop: int) -> None:
        self.segment, self.next, self.stop = segment, start, stop
        self.size, self.sizer = stop - start, segment.sizer
        self.started: float | None = None
        self.ran = 0.0  # seconds the worker spent on its calls, block by block

    def __len__(self) -> int:
        return self.stop - self.next


def pack_range(sent: LaneSent, with_header: bool) -> bytes:
    """The lane frame for ``sent``; the lane's header goes along when the worker has not seen it (may raise)."""
    segment = sent.segment
    lane = segment.lane
    if with_header and segment.header is None:
        segment.header = cloudpickle.dumps((lane.task, lane.flow_run, segment.static, list(lane.columns), lane.tags, lane.id_base))
    start, stop = sent.next, sent.stop
    body = (segment.key, segment.header if with_header else None, start, [column[start:stop] for column in lane.columns.values()])
    dumps = pickle.dumps if segment.plain else cloudpickle.dumps
    return LANE + dumps(body, pickle.HIGHEST_PROTOCOL)


class LaneReader:
    """The worker's side: lane frames into ranges to run, the headers of the last lanes kept (see :class:`LaneHeaders`)."""

    __slots__ = ("_headers",)

    def __init__(self) -> None:
        self._headers: dict[int, tuple[Any, ...]] = {}

    def read(self, payload: bytes) -> LaneRange:
        """The range a lane frame holds (raises if it will not unpickle here)."""
        key, header, start, columns = cloudpickle.loads(payload[1:])
        if header is not None:
            if key not in self._headers and len(self._headers) >= _HEADERS_KEPT:
                del self._headers[next(iter(self._headers))]
            task, flow_run, static, names, tags, id_base = cloudpickle.loads(header)
            self._headers[key] = (task, flow_run, load_static(static), names, tags, id_base)
        task, flow_run, static, names, tags, id_base = self._headers[key]
        return LaneRange(task, flow_run, static, names, columns, start, id_base, tags)

    def run(self, lane: LaneRange, counts: Any, flush_seconds: float, send: Any) -> None:
        """Run every call of ``lane``, calling ``send(frame payload)`` with each block."""
        first, total = 0, len(lane)
        while first < total:
            block = run_columns(lane, first, counts, flush_seconds)
            first += len(block.results)
            send(encode_block(block))


def encode_block(block: Block) -> bytes:
    """A block as a frame payload the flow process can load; never raises for a call's outcome."""
    from taskyard.runners.process_worker import encode_state

    special = {index: encode_state(state) for index, state in block.special.items()}
    body = (block.start, block.results, block.starts.tobytes(), block.ends.tobytes(), special, block.logs)
    try:
        return BLOCK + pickle.dumps(body, pickle.HIGHEST_PROTOCOL)
    except Exception:  # log records with values pickle cannot take
        return BLOCK + bytes(cloudpickle.dumps(body, pickle.HIGHEST_PROTOCOL))


def decode_block(payload: bytes) -> Block:
    """The block a worker sent (the flow process's side of :func:`encode_block`)."""
    from taskyard.runners.process_worker import decode_state

    start, results, starts, ends, special, logs = pickle.loads(payload[1:])
    return Block(start, results, _floats(starts), _floats(ends), {i: decode_state(s) for i, s in special.items()}, logs)


def _floats(data: bytes) -> array[float]:
    values = array("d")
    values.frombytes(data)
    return values


def as_calls(sent: LaneSent) -> list[tuple[TaskCall[Any], Any]]:
    """The unanswered calls of ``sent`` as ordinary calls with their lane futures (a worker died, or they will not travel)."""
    lane, static = sent.segment.lane, sent.segment.static
    flow_run, task, tags, prefix = lane.flow_run, lane.task, lane.tags, lane.prefix
    calls = []
    for index in range(sent.next, sent.stop):
        run_id = lane.run_id(index)
        params = dict(static)
        for name, column in lane.columns.items():
            params[name] = column[index]
        info = TaskRunInfo(run_id, prefix + run_id[:8], task.name, tags, index, flow_run_id=flow_run.id)
        calls.append((TaskCall(task, params, info, flow_run), LaneFuture(lane, index)))  # reads and settles the lane
    sent.next = sent.stop
    return calls

