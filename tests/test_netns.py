"""The simulated hosts of the multi-host tests (taskyard.testing.netns): isolated, reachable, removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskyard.testing.netns import PREFIX, HostNetwork, sweep_stale, unavailable_reason

pytestmark = pytest.mark.multihost

if unavailable_reason() is not None:
    pytestmark = [pytest.mark.multihost, pytest.mark.skip(reason=str(unavailable_reason()))]

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def _root_addresses() -> set[str]:
    found = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    return {a["local"] for link in found for a in link.get("addr_info", [])}


def _root_links() -> set[str]:
    found = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    return {link["ifname"] for link in found}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _connect(net: HostNetwork, source: str, target: str, port: int, timeout: float = 2) -> str:
    done = net[source].run([sys.executable, "-c", CONNECT, target, str(port), str(timeout)], timeout=60)
    return done.stdout.strip()


class TestHostNetwork:
    def test_hosts_reach_each_other_and_nothing_shows_in_the_root_namespace(self, tmp_path: Path) -> None:
        """A server on head is reachable from flow; the root namespace gains no address or interface."""
        addresses, links = _root_addresses(), _root_links()
        with HostNetwork() as net:
            assert _root_addresses() == addresses and _root_links() == links
            assert not any(a.startswith("198.51.100.") for a in _root_addresses())
            server = net["head"].popen([sys.executable, "-m", "http.server", "8000", "--bind", net["head"].address],
                                       tmp_path / "host.log")  # fmt: skip
            assert _eventually(lambda: _connect(net, "flow", net["head"].address, 8000) == "connected")
            assert server.poll() is None
            # (Never connect from the root namespace: its default route leads to a real network.)
            assert not any(a.startswith("198.51.100.") for a in _root_addresses())

    def test_a_partition_cuts_a_host_off_and_heal_brings_it_back(self, tmp_path: Path) -> None:
        """With worker-a's port down no connection gets through; up again, it does."""
        with HostNetwork() as net:
            net["worker-a"].popen([sys.executable, "-m", "http.server", "8000", "--bind", net["worker-a"].address],
                                  tmp_path / "host.log")  # fmt: skip
            target = net["worker-a"].address
            assert _eventually(lambda: _connect(net, "flow", target, 8000) == "connected")
            net.partition("worker-a")
            assert net.link_state("worker-a") == "DOWN"
            assert _connect(net, "flow", target, 8000, timeout=2) != "connected"
            net.heal("worker-a")
            assert _eventually(lambda: _connect(net, "flow", target, 8000) == "connected")

    def test_teardown_stops_processes_and_removes_namespaces_after_a_failure(self, tmp_path: Path) -> None:
        """A body that raises still leaves no process and no namespace behind."""
        # Only this process's namespaces: other test runs on the machine make and delete their own meanwhile.
        ours = f"{PREFIX}-{os.getpid()}-"
        before = {n for n in _netns() if n.startswith(ours)}
        pids: list[int] = []
        with pytest.raises(RuntimeError, match="test body failed"), HostNetwork() as net:
            net["worker-b"].popen([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "host.log")
            assert _eventually(lambda: bool(net["worker-b"].pids()))  # `ip netns exec` enters the namespace, then execs
            pids = net["worker-b"].pids()
            assert set(net.namespaces()) <= _netns()
            raise RuntimeError("test body failed")
        assert {n for n in _netns() if n.startswith(ours)} == before
        for pid in pids:
            assert not _alive(pid)

    def test_killing_a_host_ends_every_process_in_it(self, tmp_path: Path) -> None:
        """Host.kill signals every process of the namespace, children included."""
        with HostNetwork(roles=("flow", "worker-a")) as net:
            script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
            net["worker-a"].popen([sys.executable, "-c", script], tmp_path / "host.log")
            assert _eventually(lambda: len(net["worker-a"].pids()) == 2)
            killed = net["worker-a"].kill()
            assert len(killed) == 2 and _eventually(lambda: not net["worker-a"].pids())
            assert _eventually(lambda: not any(_alive(p) for p in killed))

    def test_sweep_removes_only_our_namespaces_whose_creator_is_dead(self) -> None:
        """A stale tyhost namespace of a dead pid goes; one of a live pid, and a foreign name, stay."""
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = f"{PREFIX}-{dead.pid}-0-br"
        live = f"{PREFIX}-{os.getpid()}-999-br"
        foreign = f"other-{dead.pid}-0-br"
        for name in (stale, live, foreign):
            subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            removed = sweep_stale()
            assert stale in removed and stale not in _netns()
            assert live in _netns() and foreign in _netns()
        finally:
            for name in (stale, live, foreign):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


def _eventually(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
