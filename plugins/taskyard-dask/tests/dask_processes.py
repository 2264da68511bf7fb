"""Starting and stopping the test cluster's processes (shared by conftest and the tests).

A module of its own, not conftest: the core and both plugins' tests run in one
pytest, where the name ``conftest`` does not say which plugin's file it is.
"""

from __future__ import annotations

import socket
import subprocess
import time

import psutil

__all__ = ("free_port", "stop_processes", "wait_for_workers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_processes(procs: list[psutil.Process], timeout: float = 15) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def wait_for_workers(address: str, count: int, *procs: subprocess.Popen[bytes]) -> None:
    from distributed import Client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a dask process exited early with code {proc.returncode}")
        try:
            with Client(address, timeout=5, set_as_default=False) as client:
                client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{count} workers did not connect to {address} within 60 s")
