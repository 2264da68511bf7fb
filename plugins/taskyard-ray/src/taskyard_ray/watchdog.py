"""Noticing a lost host: the flow process ends the runs a lost node or head took, in bounded time.

::

    worker host cut off ── the flow's gRPC connections to that node's workers send keepalive
                           pings every KEEPALIVE_TIME_MS; an unanswered one (KEEPALIVE_TIMEOUT_MS)
                           breaks the connection → Ray fails the run (NodeDiedError) → the runner
                           places it again while its retries allow, else Crashed
    head host lost ─────── HeadWatch, while runs are outstanding: a TCP connect to the GCS address
                           every PROBE_PERIOD_S; none answered for HEAD_LOST_AFTER_S → on_lost:
                           the runner ends every outstanding run Crashed, naming the head, and
                           refuses new ones the same way

Why both are needed (Ray 2.60, measured on the simulated hosts of
``taskyard.testing.netns``): a worker host whose link goes down is declared
dead by the head after about 65 s, but Ray does not fail the runs that were
on it — the driver waits for its gRPC connection to that node's worker, and
the client keepalive Ray uses by default (``grpc_client_keepalive_time_ms``)
takes minutes to notice (the flow had not ended 240 s after the cut). Ray reads its system config from
``RAY_<name>`` environment variables when a process joins a cluster, so the
driver alone gets a shorter keepalive (:func:`driver_keepalive`), without
touching the cluster: 60 s, the shortest a Ray server with default settings
accepts (see KEEPALIVE_TIME_MS); a cluster whose every process sets
``RAY_grpc_client_keepalive_time_ms`` lower accepts, and the driver uses,
that value. A lost head gives the driver no error at all: Ray
waits ``gcs_rpc_server_reconnect_timeout_s`` (60 s) and then ends the flow
process itself, with no flow run state recorded; :class:`HeadWatch` ends the
runs first, so the flow run ends Failed with a message naming the head.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

__all__ = (
    "HeadWatch",
    "driver_keepalive",
    "KEEPALIVE_TIME_MS",
    "KEEPALIVE_TIMEOUT_MS",
    "PROBE_PERIOD_S",
    "HEAD_LOST_AFTER_S",
)

logger = logging.getLogger("taskyard.ray")

# The driver pings a connection with a call outstanding but no data for this long, and drops it when
# a ping is not answered in time. Not less: a Ray server accepts such pings no more often than every
# min(60 s, its own grpc_client_keepalive_time_ms) (300 s by default), and answers more frequent ones
# with GOAWAY "too_many_pings", which ends the connection and Ray fails the run on it as a crashed
# worker: at 10 s, every run longer than about 30 s ended Crashed on a joined cluster.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 10_000
# While runs are outstanding the head is probed this often; unreachable this long, it is lost.
PROBE_PERIOD_S = 2.0
# Well inside Ray's own 60 s, after which Ray ends the flow process without a word.
HEAD_LOST_AFTER_S = 15.0

_KEEPALIVE = {
    "RAY_grpc_client_keepalive_time_ms": str(KEEPALIVE_TIME_MS),
    "RAY_grpc_client_keepalive_timeout_ms": str(KEEPALIVE_TIMEOUT_MS),
}


@contextlib.contextmanager
def driver_keepalive() -> Iterator[None]:
    """While the flow process joins a cluster (``ray.init``): a short gRPC client keepalive for it.

    Ray reads ``RAY_grpc_client_keepalive_*`` when the driver connects;
    the variables are set only around that call (a value the user set is
    kept) and restored after, so no process the flow starts later inherits
    them. The cluster's own processes are not affected.
    """
    saved = {name: os.environ.get(name) for name in _KEEPALIVE}
    for name, value in _KEEPALIVE.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` too) as ``(host, port)``.

    Raises:
        ValueError: ``address`` has no port.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


class HeadWatch:
    """A thread that calls ``on_lost(message)`` once the Ray head at ``address`` stops answering.

    It probes only while ``busy()`` is true (runs are outstanding): a TCP
    connect to the GCS port, which the head's kernel answers even when the
    GCS is busy. After ``lost_after`` s without an answer it calls
    ``on_lost`` once, with a message naming the head and saying for how
    long it was unreachable, and stops.

    Args:
        address: The GCS address, ``"host:port"``.
        busy: Whether the runner has runs outstanding now.
        on_lost: Called (on the watch's thread) when the head is lost.
        period: Seconds between probes (and each probe's connect timeout).
        lost_after: Seconds without an answer after which the head is lost.
        server: What listens at ``address``, for the message (``"GCS"``,
            ``"Ray Client server"``).
    """

    def __init__(
        self,
        address: str,
        busy: Callable[[], bool],
        on_lost: Callable[[str], None],
        period: float = PROBE_PERIOD_S,
        lost_after: float = HEAD_LOST_AFTER_S,
        server: str = "GCS",
    ) -> None:
        self.address = address
        self._server = server
        self._target = split_address(address)
        self._busy = busy
        self._on_lost = on_lost
        self._period = period
        self._lost_after = lost_after
        self._stop = threading.Event()
        self.lost: str | None = None
        """The message given to ``on_lost``, once the head was lost."""
        self._thread = threading.Thread(target=self._watch, name="taskyard-ray-headwatch", daemon=True)

    def start(self) -> HeadWatch:
        """Start watching; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (waits for the thread, at most one probe)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._period + 5)

    def _answers(self) -> str | None:
        """None if the head accepts a connection, else why not."""
        try:
            socket.create_connection(self._target, timeout=self._period).close()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _watch(self) -> None:
        last_answer = time.monotonic()
        while not self._stop.wait(self._period):
            if not self._busy():
                last_answer = time.monotonic()
                continue
            failure = self._answers()
            now = time.monotonic()
            if failure is None:
                last_answer = now
                continue
            silent = now - last_answer
            logger.debug("the Ray head at %s did not answer (%s) for %.1f s", self.address, failure, silent)
            if silent >= self._lost_after and not self._stop.is_set():
                self.lost = (
                    f"the Ray head at {self.address} was lost: its {self._server} did not answer for "
                    f"{silent:.0f} s ({failure})"
                )
                self._on_lost(self.lost)
                return
