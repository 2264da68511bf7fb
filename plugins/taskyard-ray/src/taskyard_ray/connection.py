"""Starting, joining and leaving Ray: every ``ray.init`` and ``ray.shutdown`` of the plugin.

Three ways a runner gets Ray (decided in :func:`attach`):

* Ray is already initialised in this process (a notebook, a Ray job, the
  runner of an enclosing flow): use it and leave it alone at exit.
* ``address`` given (``"127.0.0.1:6379"``, ``"auto"``, or a Ray Client
  address ``"ray://HOST:10001"``): connect with ``ray.init(address=...)``;
  at exit disconnect, and leave the cluster running.
* No address: :func:`start_local_ray` starts a fresh single-node Ray,
  bound to 127.0.0.1, and ``ray.shutdown()`` stops exactly those processes
  at exit. It passes ``address="local"``, so neither ``RAY_ADDRESS`` nor a
  stale ``/tmp/ray/ray_current_cluster`` left by a killed cluster makes it
  try to join something else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskyard_ray.reaper import Reaper, children_of, start_reaper, with_descendants
from taskyard_ray.watchdog import driver_keepalive

__all__ = (
    "Connection", "attach", "release", "start_local_ray", "patient_node_lookup", "client_server", "LOCAL_DEFAULTS",
    "CLIENT_PREFIX",
)  # fmt: skip

# Small by default: the runner's own Ray shares the machine with the flow.
LOCAL_DEFAULTS: Mapping[str, Any] = {
    "object_store_memory": 200 * 1024 * 1024,
    "include_dashboard": False,
}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
CLIENT_PREFIX = "ray://"
# Where `ray start --head` starts its Ray Client server unless --ray-client-server-port says otherwise.
CLIENT_DEFAULT_PORT = 10001
# Ray gives a starting node a fixed 30 s to register with its GCS (ray._private.node, not
# configurable); on a machine busy with other work the raylet can take longer, and ray.init
# then fails although the node comes up. See patient_node_lookup.
NODE_START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Connection:
    """How a runner holds Ray: whether it must call ``ray.shutdown()`` and whether it started Ray."""

    owned: bool
    started: bool
    address: str
    reaper: Reaper | None = field(default=None, repr=False, compare=False)
    """For a Ray the runner started: ends its processes with the flow process (see ``taskyard_ray.reaper``)."""
    client: str | None = None
    """``HOST:PORT`` of the Ray Client server this process talks to Ray through, None when it is a driver itself."""


def attach(address: str | None, init_kwargs: Mapping[str, Any]) -> Connection:
    """Get Ray for a runner: the one already initialised, a cluster at ``address``, or a fresh local one.

    Raises:
        ValueError: Ray is already initialised here, connected to another
            cluster than ``address``.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        client = client_server()
        if address is not None and address != "auto" and not _same(address, current, client):
            shown = current if client is None else f"{CLIENT_PREFIX}{client}" if client else "a Ray Client server"
            raise ValueError(
                f"Ray is already initialised in this process, connected to {shown}, not to {address!r}; "
                "one process talks to one Ray cluster: pass that address, or run the flow in another process"
            )
        return Connection(owned=False, started=False, address=current, client=client)
    if address is None:
        reaper = start_local_ray(init_kwargs)
        return Connection(owned=True, started=True, address=ray.get_runtime_context().gcs_address, reaper=reaper)
    if address.startswith(CLIENT_PREFIX):  # Ray Client: the driver runs on the cluster, this process talks to it
        try:
            with _keeping_sigterm():
                ray.init(address=address, **init_kwargs)
        except BaseException:
            # A failed connection leaves Ray's client mode half set up: every later Ray call would go to it.
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise
        client = address[len(CLIENT_PREFIX) :]
        if not client.rpartition(":")[2].isdigit():
            client += f":{CLIENT_DEFAULT_PORT}"
        return Connection(owned=True, started=False, address=ray.get_runtime_context().gcs_address, client=client)
    with _loopback_if(address), _keeping_sigterm(), driver_keepalive():  # a cut-off node: noticed after a minute or more
        ray.init(address=address, **init_kwargs)
    return Connection(owned=True, started=False, address=ray.get_runtime_context().gcs_address)


def client_server() -> str | None:
    """``HOST:PORT`` of the Ray Client server this process is connected through; None when not on Ray Client.

    An empty string when connected through Ray Client but the server's
    address cannot be read (it is a private attribute of Ray's client).
    """
    from ray.util import client

    api: Any = client.ray
    if not api.is_connected():
        return None
    worker = getattr(api.get_context(), "client_worker", None)
    found = getattr(worker, "_conn_str", None)  # no public API says where the client connected
    return found if isinstance(found, str) else ""


def start_local_ray(init_kwargs: Mapping[str, Any]) -> Reaper | None:
    """Start a fresh single-node Ray in this process, every socket on 127.0.0.1.

    ``init_kwargs`` go to ``ray.init`` over :data:`LOCAL_DEFAULTS`. This is
    the one place the plugin starts Ray processes. The processes ``ray.init``
    started are handed to a reaper (returned), which ends them and every
    process they started when the lifeline closes: at ``release`` or when
    this process dies, SIGKILL included. Interrupted (Ctrl-C) half-way, it
    stops what was started before the interrupt goes on. The node gets
    :data:`NODE_START_TIMEOUT_S` to register instead of Ray's fixed 30 s,
    which a busy machine can miss.
    """
    import ray

    kwargs = {**LOCAL_DEFAULTS, **init_kwargs}
    before = children_of(os.getpid())
    try:
        with _loopback_if("127.0.0.1"), patient_node_lookup(), _keeping_sigterm(), _quiet_start():
            ray.init(address="local", _node_ip_address="127.0.0.1", **kwargs)
    except BaseException:
        # Interrupted (Ctrl-C) or failed half-way: stop what was started, so nothing outlives the flow.
        started = with_descendants(children_of(os.getpid()) - before)
        with contextlib.suppress(Exception):
            ray.shutdown()
        with contextlib.suppress(Exception):
            leftover = start_reaper(started)
            if leftover is not None:
                leftover.release()
        raise
    return start_reaper(with_descendants(children_of(os.getpid()) - before))


# What ray.init says on the driver when it starts a local Ray, and the least level shown meanwhile:
# the runner started it for this flow run, so "Started a local Ray instance" and "token
# authentication is enabled" (Ray's default since 2.59; the token stays on) are news to nobody.
_START_LOGGERS = {
    "ray._private.worker": logging.WARNING,
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
}


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Hide Ray's start-up notices on the driver while the runner starts its own Ray."""
    loggers = {name: logging.getLogger(name) for name in _START_LOGGERS}
    saved = {name: log.level for name, log in loggers.items()}
    for name, log in loggers.items():
        log.setLevel(_START_LOGGERS[name])
    try:
        yield
    finally:
        for name, log in loggers.items():
            log.setLevel(saved[name])


@contextlib.contextmanager
def _keeping_sigterm() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which replaces it with its own.

    Ray's handler exits at once (``sys.exit``); taskyard's, installed while a
    flow run is in progress (``taskyard.interrupts``), cancels the run, runs
    its ``on_cancellation`` hooks and ends it Cancelled — then the runner
    stops the local Ray it started, as Ray's handler would have.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def release(connection: Connection) -> None:
    """Undo :func:`attach`: shut down what the runner started, disconnect what it joined, nothing else."""
    if connection.owned:
        import ray

        ray.shutdown()
    if connection.reaper is not None:
        connection.reaper.release()


def _same(address: str, current: str, client: str | None = None) -> bool:
    """Whether ``address`` names the cluster this process is connected to (at ``current``, or via ``client``)."""
    if address.startswith(CLIENT_PREFIX) or client is not None:
        if not (address.startswith(CLIENT_PREFIX) and client is not None):
            return False  # one is a Ray Client connection, the other not
        if not client:
            return True  # connected through Ray Client, to a server whose address Ray does not say: trust the caller
        address, current = address[len(CLIENT_PREFIX) :], client
    host, _, port = address.rpartition(":")
    current_host, _, current_port = current.rpartition(":")
    if not port:
        return True  # a bare-host address: trust the caller
    return port == current_port and (host == current_host or (host in _LOOPBACK and current_host in _LOOPBACK))


@contextlib.contextmanager
def _loopback_if(address: str) -> Iterator[None]:
    """Keep a loopback address on loopback while Ray starts or connects.

    Ray replaces 127.0.0.1 by the machine's address (so that other machines
    could reach it), and then its servers listen on every interface. On
    Linux it does not when multi-node clusters are "disabled" — the setting
    Ray uses on macOS and Windows — which is what a loopback-only Ray is.

    Why it is needed (Ray 2.60, checked with ``ss -ltnp``): a local Ray
    started without it takes the machine's address as its node address and
    its GCS, raylet, agents, workers and the driver listen on ``*``; with it,
    every socket listens on 127.0.0.1. A driver connecting to a cluster on
    127.0.0.1 without it looks for a node at the machine's address, finds
    none, and hangs. The switch is a private constant (``ray_constants
    .ENABLE_RAY_CLUSTER``); it is set only around ``ray.init`` and only for
    a loopback address.
    """
    host = address.rpartition(":")[0] or address
    if host.strip("[]") not in _LOOPBACK:
        yield
        return
    from ray._private import ray_constants  # the switch has no public API

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def patient_node_lookup(timeout: float = NODE_START_TIMEOUT_S) -> Iterator[None]:
    """While Ray starts a node here, keep asking the GCS for it for ``timeout`` s, not Ray's 30 s.

    Ray's node start-up polls ``services.get_node`` for a fixed 30 s; each
    call here retries for up to ``timeout`` instead (a private function,
    patched only while the node starts). Used by :func:`start_local_ray`
    and by the test clusters' ``ray start``; joining a running cluster does
    not need it.
    """
    from ray._private import services  # the wait is not configurable otherwise

    original: Any = services.get_node

    def patient(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    services.get_node = patient
    try:
        yield
    finally:
        services.get_node = original
