"""Simulated hosts on one Linux box: network namespaces joined by a bridge.

::

                     bridge namespace  <prefix>-<pid>-<n>-br
                 ┌────────────── br0 ──────────────┐
               p-flow       p-head       p-wa       p-wb        (veth ends, in the bridge ns)
                 │            │            │          │
               eth0         eth0         eth0       eth0        (in each host's namespace)
         flow 198.51.100.10  head .20   worker-a .31  worker-b .32

Every address comes from 198.51.100.0/24 (TEST-NET-2, reserved for
documentation; not TEST-NET-1, which some sandboxes give the machine
itself) and exists only inside these namespaces: each veth pair is created
inside the bridge namespace with its peer placed straight into the host's
namespace (``ip -n BR link add … peer name eth0 netns HOST``), so nothing
appears in the root namespace, not even for a moment. There is no route
out: a host reaches the other hosts and nothing else. (Never connect to
these addresses from the root namespace: there, they lead to whatever the
machine's default route reaches.)

Namespace names carry the creating process's pid (``tyhost-<pid>-<n>-…``),
so parallel or crashed runs never collide, and :func:`sweep_stale` removes
only namespaces with this prefix whose creator is dead. :meth:`HostNetwork.close`
stops every process in the namespaces (by pid, as ``ip netns pids`` lists
them), then deletes the namespaces, whatever happened before.

Needs root and iproute2's ``ip`` (:func:`unavailable_reason` says why not).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from taskyard.pids import pid_alive

__all__ = (
    "PREFIX",
    "SUBNET",
    "HOST_ADDRESSES",
    "Host",
    "HostNetwork",
    "Counters",
    "sweep_stale",
    "unavailable_reason",
)

PREFIX = "tyhost"
SUBNET = "198.51.100.0/24"
# Role → address. The flow runs on "flow", the scheduler / Ray head on "head".
HOST_ADDRESSES: Mapping[str, str] = {
    "flow": "198.51.100.10",
    "head": "198.51.100.20",
    "worker-a": "198.51.100.31",
    "worker-b": "198.51.100.32",
}
_SHORT = {"flow": "flow", "head": "head", "worker-a": "wa", "worker-b": "wb"}
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-[a-z]+$")
_instances = count()


def unavailable_reason() -> str | None:
    """Why simulated hosts cannot be built here (not root, no ``ip``), or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "multi-host tests build network namespaces: they need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "multi-host tests build network namespaces with iproute2's `ip`, which is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _netns_names() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(netns: str) -> list[int]:
    done = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def _stop_pids(pids: Sequence[int], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL what is left (by pid)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sweep_stale() -> list[str]:
    """Delete namespaces left by crashed runs: ours by prefix, and only if their creator is dead.

    Their processes are killed first (by pid). Returns the names removed.
    """
    removed = []
    for name in _netns_names():
        match = _NAME.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        pids = _netns_pids(name)
        if pids:
            _stop_pids(pids, timeout=0)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


@dataclass(frozen=True)
class Counters:
    """Bytes and packets through a host's interface, from its ``/sys/class/net`` statistics."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int

    @property
    def total_bytes(self) -> int:
        """Bytes received plus bytes sent."""
        return self.rx_bytes + self.tx_bytes

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.rx_bytes - other.rx_bytes, self.tx_bytes - other.tx_bytes,
            self.rx_packets - other.rx_packets, self.tx_packets - other.tx_packets,
        )


class Host:
    """One simulated host: a network namespace with one interface (``eth0``) and one address."""

    def __init__(self, role: str, netns: str, address: str, port: str) -> None:
        self.role = role
        self.netns = netns
        self.address = address
        self.port = port
        """The host's veth end in the bridge namespace (its "switch port")."""
        self.started: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return f"Host({self.role!r}, {self.address}, netns={self.netns!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host (``ip netns exec``, which execs: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host, output appended to ``log``; remembered for :meth:`kill`."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.command(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env if env is not None else os.environ),
            )
        self.started.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host to the end (its output captured)."""
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env=dict(env if env is not None else os.environ),
        )

    def pids(self) -> list[int]:
        """Every process living in this host's namespace now."""
        return _netns_pids(self.netns)

    def kill(self, sig: int = signal.SIGKILL) -> list[int]:
        """The host dies: send ``sig`` to every process in it (by pid); returns the pids signalled."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for proc in self.started:
            if proc.pid in pids:
                _reap(proc)
        self.started = [p for p in self.started if p.poll() is None]
        return pids

    def stop(self, timeout: float = 10) -> None:
        """Stop every process in this host: SIGTERM, then SIGKILL after ``timeout`` s (by pid)."""
        _stop_pids(self.pids(), timeout)
        for proc in self.started:
            _reap(proc)
        self.started = []

    def counters(self, device: str = "eth0") -> Counters:
        """Byte and packet counters of ``device``, read from ``/sys/class/net`` inside the host."""
        stats = "/sys/class/net/{}/statistics/{}".format
        names = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
        done = self.run(["cat", *(stats(device, n) for n in names)], timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"reading the counters of {device} in {self.netns} failed: {done.stderr.strip()}")
        values = [int(v) for v in done.stdout.split()]
        return Counters(*values)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class HostNetwork:
    """Four simulated hosts (flow, head, worker-a, worker-b) on a bridge in its own namespace.

    A context manager: ``__enter__`` builds the network (sweeping stale
    namespaces of dead runs first), ``__exit__`` stops every process in the
    hosts by pid and deletes the namespaces, also when the body raised.

    Args:
        roles: The hosts to build; by default the four of :data:`HOST_ADDRESSES`.
        prefix: Of the namespace names. Only :data:`PREFIX` is swept when
            its creator is dead; a network meant to outlive its creator
            (``scripts/multihost.py up``) takes another.
    """

    def __init__(self, roles: Sequence[str] = tuple(HOST_ADDRESSES), prefix: str = PREFIX) -> None:
        unknown = [r for r in roles if r not in HOST_ADDRESSES]
        if unknown:
            raise ValueError(f"unknown host roles {unknown}; choose from {list(HOST_ADDRESSES)}")
        self.id = f"{prefix}-{os.getpid()}-{next(_instances)}"
        self.bridge_netns = f"{self.id}-br"
        self.hosts: dict[str, Host] = {
            role: Host(role, f"{self.id}-{_SHORT[role]}", HOST_ADDRESSES[role], f"p-{_SHORT[role]}") for role in roles
        }
        self._made: list[str] = []

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def __enter__(self) -> HostNetwork:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespaces(self) -> list[str]:
        """The namespaces this network made (bridge first)."""
        return list(self._made)

    def build(self) -> None:
        """Create the namespaces, the bridge and one veth pair per host."""
        sweep_stale()
        br = self.bridge_netns
        self._add_netns(br)
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._add_netns(host.netns)
            # Created in the bridge namespace, its peer placed straight into the host's.
            _ip("-n", br, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
            _ip("-n", br, "link", "set", host.port, "master", "br0")
            _ip("-n", br, "link", "set", host.port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def partition(self, role: str) -> None:
        """Cut ``role``'s cable: its port on the bridge goes down (the host keeps running, alone)."""
        _ip("-n", self.bridge_netns, "link", "set", self.hosts[role].port, "down")

    def heal(self, role: str) -> None:
        """Plug ``role``'s cable back in."""
        _ip("-n", self.bridge_netns, "link", "set", self.hosts[role].port, "up")

    def link_state(self, role: str) -> str:
        """``UP``/``DOWN``: the operational state of ``role``'s port on the bridge."""
        found: Any = json.loads(_ip("-j", "-n", self.bridge_netns, "link", "show", self.hosts[role].port).stdout)
        return str(found[0].get("operstate", "UNKNOWN"))

    def stop_processes(self, timeout: float = 10, namespaces: Sequence[str] | None = None) -> None:
        """Stop every process in the hosts (or in ``namespaces``), all at once: SIGTERM, SIGKILL after ``timeout`` s.

        One grace period for all: processes that hang on their way out (a
        cluster node that lost its head) cost ``timeout`` once, not per host.
        """
        chosen = [h.netns for h in self.hosts.values()] if namespaces is None else list(namespaces)
        pids = [pid for name in chosen for pid in _netns_pids(name)]
        if pids:
            _stop_pids(pids, timeout)
        for host in self.hosts.values():
            for proc in host.started:
                _reap(proc)
            host.started = [p for p in host.started if p.poll() is None]

    def close(self) -> None:
        """Stop every process in every host (by pid), then delete the namespaces. Safe to call twice."""
        errors = []
        self.stop_processes(namespaces=self._made)
        for name in reversed(self._made):
            done = _ip("netns", "del", name, check=False)
            if done.returncode != 0 and name in _netns_names():
                errors.append(f"{name}: {done.stderr.strip()}")
        self._made = []
        if errors:
            raise RuntimeError(f"could not delete network namespaces: {errors}")
