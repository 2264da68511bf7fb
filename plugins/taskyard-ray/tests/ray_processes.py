"""Starting and stopping the test clusters' Ray processes (shared by conftest and the tests).

A module of its own, not conftest: the core and both plugins' tests run in one
pytest, where the name ``conftest`` does not say which plugin's file it is.

Every process binds 127.0.0.1. The nodes start through ``ray_on_loopback.py``
(Ray's CLI, keeping 127.0.0.1 as the node address, which Ray otherwise swaps
for the machine's). Every process started here is stopped by pid (terminate,
then kill) — never ``ray stop``, which would stop other people's Ray too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ("RayCluster", "descendants", "free_port", "stop_tree", "tempfile_dir", "HERE")

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_tree(pids: list[int], timeout: float = 20) -> None:
    """Terminate these processes and their children by pid; kill what is left."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [*proc.children(recursive=True), proc]:
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            pass
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def descendants(pid: int) -> list[int]:
    try:
        proc = psutil.Process(pid)
        return [proc.pid, *(p.pid for p in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class RayCluster:
    """A head and worker nodes running as ``ray start --block`` subprocesses."""

    def __init__(self, address: str, temp_dir: Path, logs: Path) -> None:
        self.address = address
        self.temp_dir = temp_dir
        self.logs = logs
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.client_address: str | None = None
        """``ray://127.0.0.1:PORT`` when the head runs a Ray Client server."""

    def start_head(self, port: int, client_port: int | None = None) -> None:
        """Start the head; with ``client_port``, its Ray Client server listens there (``ray://``)."""
        # The head's Ray Client server starts a driver per client connection in a process of its own, which
        # ray_on_loopback.py does not reach; Ray's switch keeps it (and the head) on 127.0.0.1.
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        # The client server gives the driver it starts per connection 30 s to come up; a busy machine needs more.
        env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "180")
        client = [f"--ray-client-server-port={client_port}"] if client_port is not None else []
        self._start(
            ["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
             f"--temp-dir={self.temp_dir}", *client],
            env, "head",
        )
        if client_port is not None:
            self.client_address = f"ray://127.0.0.1:{client_port}"

    def add_node(self, *args: str, name: str = "node") -> subprocess.Popen[bytes]:
        """Join a node (``args``: its ``--num-cpus``, ``--resources``, ...)."""
        return self._start([f"--address={self.address}", *args], None, name)

    def _start(self, args: list[str], env: dict[str, str] | None, name: str) -> subprocess.Popen[bytes]:
        env = env if env is not None else dict(os.environ)
        cmd = [sys.executable, str(HERE / "ray_on_loopback.py"), "start", "--block", "--disable-usage-stats",
               "--object-store-memory=100000000", *args]
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.nodes.append(proc)
        return proc

    def wait_for_nodes(self, count: int, timeout: float = 180) -> None:
        script = (
            "import ray, json, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))"
        )
        deadline = time.monotonic() + timeout
        host, _, port = self.address.rpartition(":")
        while time.monotonic() < deadline:
            for proc in self.nodes:
                if proc.poll() is not None:
                    log = (self.logs / "head.log").read_text()[-2000:] if (self.logs / "head.log").exists() else ""
                    raise RuntimeError(f"a Ray node exited early with code {proc.returncode}; see {self.logs}\n{log}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                time.sleep(0.5)
                continue
            try:
                done = subprocess.run(
                    [sys.executable, "-c", script, self.address], capture_output=True, text=True, timeout=60,
                    env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                )
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1]) >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes did not come up within {timeout} s; see {self.logs}")

    def pids(self) -> list[int]:
        return [pid for proc in self.nodes for pid in descendants(proc.pid)]

    def stop(self) -> None:
        stop_tree([proc.pid for proc in self.nodes])
        for proc in self.nodes:
            proc.wait(timeout=10)


def tempfile_dir() -> str:
    """A short directory for Ray's sockets (their paths must stay under ~100 characters)."""
    import tempfile

    return tempfile.mkdtemp(prefix="tyray-", dir="/tmp")
