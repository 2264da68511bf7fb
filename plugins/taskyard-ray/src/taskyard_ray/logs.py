"""Log records made in Ray workers, streamed to the flow process while the runs go on.

::

    Ray worker (a run in progress)             LogSink actor (one per flow        flow process
    record on any logger ─ _StreamHandler ──▶  process and Ray connection)  ──▶  pump thread:
      toolkit.record_payload(record)            put(payloads) / take(wait)        take(1 s) long-poll
      marked taskyard_streamed (the engine                                        → toolkit.LogRelay
      does not ship it again with the state)                                      → the flow's loggers
      run ends: one round trip to the sink, so its records are there before its state

The actor is named ``taskyard-logs-<id>`` and created by the first runner of
the flow process that connects to a Ray; later runners (subflows, the next
flow runs) reuse it. It holds no CPU (``num_cpus=0``) and dies with the
flow process's Ray connection. A runner that shuts down flushes: every
record the sink holds has been delivered before its flow run ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from taskyard.runners.base import TaskCall
from taskyard.runners.toolkit import LogRelay, record_payload

__all__ = ("LogSink", "LogStream", "begin", "end")

logger = logging.getLogger("taskyard.ray")

_TAKE_WAIT_S = 1.0


class LogSink:
    """The Ray actor between the workers and one flow process (run as ``ray.remote(LogSink)``)."""

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] = []
        self._received = 0
        self._arrived = asyncio.Event()

    async def put(self, payloads: list[dict[str, Any]]) -> int:
        """Keep ``payloads`` for the flow process; returns how many were received so far."""
        if payloads:
            self._records.extend(payloads)
            self._received += len(payloads)
            self._arrived.set()
        return self._received

    async def take(self, wait_s: float) -> tuple[list[dict[str, Any]], int]:
        """The records kept (waiting up to ``wait_s`` for one), and how many were received so far."""
        if not self._records:
            try:
                await asyncio.wait_for(self._arrived.wait(), wait_s)
            except TimeoutError:
                pass
        self._arrived.clear()
        records, self._records = self._records, []
        return records, self._received

    async def wake(self) -> None:
        """Let a waiting ``take`` return now."""
        self._arrived.set()


# -- flow process -----------------------------------------------------------------------------


class LogStream:
    """Flow side: the sink actor of this process's Ray connection and the thread that empties it.

    The pump thread runs only while a runner uses the stream. Between flow
    runs on a Ray the process keeps (an address, or a Ray the user
    initialised) the actor stays and the pump stops, so no thread of
    taskyard's is inside a Ray call when the user's own ``ray.shutdown()``
    comes: Ray tears its core worker down under any thread still in a call,
    which ended such a process with a segmentation fault.
    """

    _lock = threading.Lock()
    _current: LogStream | None = None

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self.name = f"taskyard-logs-{os.getpid()}-{os.urandom(4).hex()}"
        self.key = _connection_key(ray)
        actor = ray.remote(num_cpus=0, max_concurrency=1000)(LogSink)
        self._actor = actor.options(name=self.name).remote()
        self.relay = LogRelay()
        self._users = 0
        self._closed = False
        self._delivered = 0
        self._progress = threading.Condition()
        self._pump: threading.Thread | None = None
        self._pumping = False  # the pump thread's order to go on; cleared when the last user leaves

    @classmethod
    def acquire(cls, ray: Any) -> LogStream:
        """The stream of the current Ray connection (started if it has none); pair with :meth:`release`."""
        with cls._lock:
            stream = cls._current
            if stream is None or stream._closed or stream.key != _connection_key(ray):
                stream = cls._current = LogStream(ray)
            if stream._users == 0:
                stream._start_pump()
            stream._users += 1
            return stream

    def release(self, close: bool, hurry: bool = False) -> None:
        """A runner is done with the stream: deliver what the sink holds; ``close`` before Ray goes away.

        The last user stops the pump thread (and with ``close`` forgets the
        stream). ``hurry`` (a second Ctrl-C): wait at most a second for each step.
        """
        self.flush(timeout=1.0 if hurry else 10.0)
        with LogStream._lock:
            self._users -= 1
            if self._users > 0:
                return
            if close:
                self._closed = True
                if LogStream._current is self:
                    LogStream._current = None
            self._pumping = False
            pump = self._pump
        try:  # the pump's long-poll returns now
            self._actor.wake.remote()
        except Exception:
            pass
        if pump is not None:
            pump.join(timeout=1.0 if hurry else 5.0)

    def _start_pump(self) -> None:
        """(Under the lock.) Start the pump thread, once the one stopped before it has ended."""
        if self._pump is not None and self._pump.is_alive():
            self._pump.join(timeout=_TAKE_WAIT_S + 5)  # stopping: its long-poll ends within a second
        self._pumping = True
        self._pump = threading.Thread(target=self._run, name="taskyard-ray-logs", daemon=True)
        self._pump.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record the sink has received is delivered (bounded by ``timeout``)."""
        try:
            target = self._ray.get(self._actor.put.remote([]), timeout=timeout)
            self._actor.wake.remote()
        except (Exception, SystemExit) as exc:  # Ray is going or gone: nothing more will arrive
            logger.debug("flushing worker logs failed: %r", exc)
            return
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._delivered < target and not self._closed and self._pump is not None and self._pump.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._progress.wait(min(left, 0.5))

    def _run(self) -> None:
        ray = self._ray
        while self._pumping:
            try:
                records, received = ray.get(self._actor.take.remote(_TAKE_WAIT_S), timeout=_TAKE_WAIT_S + 30)
            except BaseException as exc:  # Ray raises SystemExit here when it is shut down meanwhile
                if self._pumping:
                    logger.debug("the worker log stream stopped: %r", exc)
                break
            for payload in records:
                try:
                    self.relay.deliver(payload)
                except Exception:  # a handler of the user's failed: keep the stream going
                    logger.exception("delivering a worker's log record failed")
            with self._progress:
                self._delivered = received
                self._progress.notify_all()
        with self._progress:
            self._progress.notify_all()

    def watch(self, call: TaskCall[Any]) -> None:
        """Deliver the records of ``call``'s flow run."""
        self.relay.watch(call)


def _connection_key(ray: Any) -> str:
    context = ray.get_runtime_context()
    return f"{context.gcs_address}/{context.get_job_id()}"


# -- worker side --------------------------------------------------------------------------------

_sink_name: str | None = None
_sinks: dict[str, Any] = {}
_sent = False
_handler: _StreamHandler | None = None
_handler_lock = threading.Lock()


class _StreamHandler(logging.Handler):
    """On a worker's root logger, first: sends each record of the run in progress to its sink."""

    taskyard_internal = True  # not a user's logging configuration

    def emit(self, record: logging.LogRecord) -> None:
        global _sent
        name = _sink_name
        if name is None or getattr(record, "taskyard_forwarded", False):
            return
        from taskyard.context import task_run_var

        if task_run_var.get() is None:  # not logged by the run (another thread): left to the engine
            return
        try:
            _sink(name).put.remote([record_payload(record, f"Ray worker pid {os.getpid()}")])
            record.taskyard_streamed = True  # the engine need not ship it with the state
            _sent = True
        except Exception:
            self.handleError(record)


def _sink(name: str) -> Any:
    sink = _sinks.get(name)
    if sink is None:
        import ray

        sink = _sinks[name] = ray.get_actor(name)
    return sink


def begin(sink: str | None) -> bool:
    """A run starts on this worker: stream its records to ``sink`` (None: leave them to the engine)."""
    global _sink_name, _sent, _handler
    if sink is None:
        return False
    if _handler is None:
        with _handler_lock:
            if _handler is None:
                _handler = _StreamHandler()
                root = logging.getLogger()
                root.handlers.insert(0, _handler)  # before the engine's capture handler sees a record
    _sink_name = sink
    _sent = False
    return True


def end() -> None:
    """The run ended: make sure its records reached the sink before its state leaves the worker."""
    global _sink_name
    name, _sink_name = _sink_name, None
    if name is None or not _sent:
        return
    try:
        import ray

        ray.get(_sink(name).put.remote([]), timeout=30)
    except Exception as exc:  # the records stay behind; the run's state is still sent
        logger.debug("flushing a run's log records to the flow process failed: %r", exc)
