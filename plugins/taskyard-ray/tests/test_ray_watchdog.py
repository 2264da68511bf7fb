"""The watchdog's parts on their own: the head watch against a real socket, the driver's keepalive settings.

The whole (a head host killed, a worker host cut off) is checked across
simulated hosts in test_ray_multihost.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from taskyard_ray.watchdog import HeadWatch, driver_keepalive, split_address

PERIOD = 0.05
LOST_AFTER = 0.3


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog answers)."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield sock
    finally:
        sock.close()


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.called = threading.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.called.set()


class TestHeadWatch:
    def test_a_head_that_stops_answering_is_reported_once_naming_it(self, listener: socket.socket) -> None:
        """Once the port closes, on_lost is called once, with the address and how long it was silent."""
        address = _address(listener)
        lost = _Recorder()
        watch = HeadWatch(address, lambda: True, lost, period=PERIOD, lost_after=LOST_AFTER).start()
        try:
            time.sleep(4 * PERIOD)
            assert not lost.called.is_set()
            listener.close()
            assert lost.called.wait(timeout=30)
            time.sleep(4 * PERIOD)
        finally:
            watch.stop()
        assert len(lost.messages) == 1
        assert address in lost.messages[0] and "Ray head" in lost.messages[0]
        assert watch.lost == lost.messages[0]

    def test_the_message_names_the_server_watched(self, listener: socket.socket) -> None:
        """Watching a Ray Client server (a ray:// connection), the message names it, not the GCS."""
        lost = _Recorder()
        address = _address(listener)
        listener.close()
        watch = HeadWatch(address, lambda: True, lost, period=PERIOD, lost_after=LOST_AFTER, server="Ray Client server")
        try:
            assert watch.start() and lost.called.wait(timeout=30)
        finally:
            watch.stop()
        assert f"the Ray head at {address} was lost: its Ray Client server did not answer" in lost.messages[0]

    def test_a_head_that_answers_is_never_reported(self, listener: socket.socket) -> None:
        """While the port accepts connections, on_lost is never called, however long the watch runs."""
        lost = _Recorder()
        watch = HeadWatch(_address(listener), lambda: True, lost, period=PERIOD, lost_after=LOST_AFTER).start()
        try:
            assert not lost.called.wait(timeout=4 * LOST_AFTER)
        finally:
            watch.stop()

    def test_an_idle_runner_never_probes(self, listener: socket.socket) -> None:
        """With no runs outstanding, an unreachable head is not reported; it is once runs are outstanding."""
        address = _address(listener)
        listener.close()
        busy = threading.Event()
        lost = _Recorder()
        watch = HeadWatch(address, busy.is_set, lost, period=PERIOD, lost_after=LOST_AFTER).start()
        try:
            assert not lost.called.wait(timeout=4 * LOST_AFTER)
            busy.set()
            assert lost.called.wait(timeout=30)
        finally:
            watch.stop()

    def test_stop_ends_the_thread(self, listener: socket.socket) -> None:
        """stop() returns with the watch's thread ended and no report."""
        lost = _Recorder()
        watch = HeadWatch(_address(listener), lambda: True, lost, period=PERIOD, lost_after=LOST_AFTER).start()
        watch.stop()
        assert not any(t.name == "taskyard-ray-headwatch" and t.is_alive() for t in threading.enumerate())
        assert lost.messages == []


class TestAddresses:
    def test_host_and_port_are_split(self) -> None:
        """IPv4, names and bracketed IPv6 addresses give (host, port)."""
        assert split_address("198.51.100.20:6379") == ("198.51.100.20", 6379)
        assert split_address("head.example:6380") == ("head.example", 6380)
        assert split_address("[::1]:6379") == ("::1", 6379)

    def test_an_address_without_a_port_is_refused(self) -> None:
        """A bare host is a clear error naming it."""
        with pytest.raises(ValueError, match="'head'"):
            split_address("head")


class TestDriverKeepalive:
    NAMES = ("RAY_grpc_client_keepalive_time_ms", "RAY_grpc_client_keepalive_timeout_ms")

    def test_set_while_joining_and_restored_after(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The keepalive variables exist only inside the block."""
        for name in self.NAMES:
            monkeypatch.delenv(name, raising=False)
        with driver_keepalive():
            inside = {name: os.environ.get(name) for name in self.NAMES}
        assert all(value and int(value) > 0 for value in inside.values()), inside
        assert all(name not in os.environ for name in self.NAMES)

    def test_pings_no_more_often_than_a_ray_server_accepts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every 60 s at most: a Ray server answers more frequent pings with GOAWAY, crashing any run over ~30 s."""
        for name in self.NAMES:
            monkeypatch.delenv(name, raising=False)
        with driver_keepalive():
            assert int(os.environ[self.NAMES[0]]) >= 60_000

    def test_the_users_own_values_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A value the user set is used inside the block and kept after it."""
        name = self.NAMES[0]
        monkeypatch.setenv(name, "15000")
        with driver_keepalive():
            assert os.environ[name] == "15000"
        assert os.environ[name] == "15000"
