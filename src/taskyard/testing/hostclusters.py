"""Dask and Ray clusters on simulated hosts (see :mod:`taskyard.testing.netns`).

Each cluster process starts inside its host (``ip netns exec``) bound to
that host's own address: the Dask scheduler / Ray head on ``head``, one
worker per worker host, and — for Ray, whose drivers always run on a node
of the cluster — a node with no CPUs on ``flow``, so the flow process can
join without running tasks there. Only command lines live here (no import
of dask or ray): the same code serves the tests and ``scripts/multihost.py``.

:meth:`run_flow` runs a workload of :mod:`taskyard.testing.hostflows` in
the flow host and returns its JSON report with the bytes that crossed the
flow host's interface meanwhile.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from taskyard.testing.netns import Counters, Host, HostNetwork

__all__ = ("FlowReport", "Spawned", "HostCluster", "DaskOnHosts", "RayOnHosts", "WORKERS")

WORKERS = ("worker-a", "worker-b")


class Spawned(NamedTuple):
    """A flow started on the flow host: its process, the host's counters then, where it writes its stacks."""

    proc: subprocess.Popen[str]
    before: Counters
    stacks: Path


def _stacks_of(proc: subprocess.Popen[str], stacks: Path) -> str:
    """Every thread's stack of a running flow program (it writes them to ``stacks`` on SIGUSR1)."""
    try:
        proc.send_signal(signal.SIGUSR1)
    except ProcessLookupError:
        return "(the flow process had ended)"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        text = stacks.read_text() if stacks.exists() else ""
        if text:
            return text
    return "(the flow process wrote no stacks within 5 s)"


class FlowReport(dict[str, Any]):
    """A workload's JSON report, plus ``flow_host_bytes`` (rx + tx of the flow host) and ``exit_code``."""

    @property
    def traffic(self) -> Counters:
        """The flow host's interface counters over the flow run."""
        return Counters(**self["flow_host"])


class HostCluster:
    """Common part: the network, a log directory, starting processes and running flows in the flow host."""

    runner = ""

    def __init__(self, net: HostNetwork, logs: Path, env: Mapping[str, str] | None = None) -> None:
        self.net = net
        self.logs = logs
        self.env = {**os.environ, **(env or {})}
        self._flows = itertools.count(1)

    def runner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the runner that connects the flow host to this cluster."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process on every host (by pid), all at once; the network stays."""
        self.net.stop_processes()

    def start(self) -> None:
        """Start every cluster process and wait until all workers are there."""
        raise NotImplementedError

    def start_worker(self, role: str) -> None:
        """(Re)start the worker of host ``role``."""
        raise NotImplementedError

    def wait_for_workers(self, count: int, timeout: float = 180) -> None:
        """Block until ``count`` workers are connected (asked from the flow host)."""
        raise NotImplementedError

    def run_flow(self, workload: str, timeout: float, **options: Any) -> FlowReport:
        """Run ``workload`` (``--size``, ``--nbytes``, ... from ``options``) on the flow host; its report."""
        proc = self.spawn_flow(workload, **options)
        return self.finish_flow(proc, timeout)

    def spawn_flow(self, workload: str, **options: Any) -> Spawned:
        """Start ``workload`` on the flow host without waiting (see :meth:`finish_flow`)."""
        stacks = self.logs / f"flow-{next(self._flows)}-stacks.txt"
        argv = [sys.executable, "-m", "taskyard.testing.hostflows", workload, "--runner", self.runner,
                "--runner-kwargs", json.dumps(self.runner_kwargs()), "--stacks", str(stacks)]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        flow_host = self.net["flow"]
        before = flow_host.counters()
        proc = subprocess.Popen(
            flow_host.command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=self.env,
        )
        return Spawned(proc, before, stacks)

    def finish_flow(self, spawned: Spawned, timeout: float, stacks_after: float | None = None) -> FlowReport:
        """Wait up to ``timeout`` s for a spawned flow; its report (``exit_code``, ``stderr`` too).

        ``stacks_after``: if the flow is still running after this many
        seconds, every thread's stack is taken from it (``SIGUSR1``, see
        :mod:`taskyard.testing.hostflows`) and kept in the report as
        ``stacks``, so a flow that does not end says where it waits.
        """
        proc, before, stacks = spawned
        started = time.monotonic()
        taken = ""
        try:
            if stacks_after is not None and stacks_after < timeout:
                try:
                    out, err = proc.communicate(timeout=stacks_after)
                except subprocess.TimeoutExpired:
                    taken = _stacks_of(proc, stacks)
                    out, err = proc.communicate(timeout=timeout - stacks_after)
            else:
                out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            taken = taken or _stacks_of(proc, stacks)
            proc.kill()
            out, err = proc.communicate()
            raise TimeoutError(
                f"the flow did not end within {timeout} s; stderr:\n{err[-4000:]}\nits threads then:\n{taken}"
            ) from None
        traffic = self.net["flow"].counters() - before
        lines = [line for line in out.splitlines() if line.startswith("{")]
        report = FlowReport(json.loads(lines[-1]) if lines else {})
        report.update(
            exit_code=proc.returncode, stderr=err, wall_seconds=round(time.monotonic() - started, 3),
            flow_host=vars(traffic), flow_host_bytes=traffic.total_bytes, stacks=taken,
        )
        return report

    def _python(self, host: Host, args: Sequence[str], name: str, env: Mapping[str, str] | None = None) -> None:
        host.popen([sys.executable, *args], self.logs / f"{name}.log", {**self.env, **(env or {})})

    def _check(self, code: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return self.net["flow"].run([sys.executable, "-c", code, *args], timeout=timeout, env=self.env)


_DASK_WAIT = """
import sys
from distributed import Client
with Client(sys.argv[1], timeout=30, set_as_default=False) as c:
    c.wait_for_workers(int(sys.argv[2]), timeout=float(sys.argv[3]))
    print(len(c.scheduler_info()["workers"]))
"""


class DaskOnHosts(HostCluster):
    """``dask scheduler`` on ``head``, one ``dask worker`` (with its nanny) on each worker host.

    Args:
        threads: Threads per worker.
        port: The scheduler's port on the head host (ports are per host: no clash).
    """

    runner = "dask"

    def __init__(self, net: HostNetwork, logs: Path, threads: int = 1, port: int = 8786) -> None:
        # As the runner's own LocalCluster: a task whose worker dies is lost at once (no Dask-side
        # retry), and taskyard's retries decide.
        super().__init__(net, logs, {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
        self.threads = threads
        self.address = f"tcp://{net['head'].address}:{port}"
        self.port = port

    def runner_kwargs(self) -> dict[str, Any]:
        return {"address": self.address}

    def start(self) -> None:
        head = self.net["head"]
        self._python(
            head, ["-m", "distributed.cli.dask_scheduler", "--host", head.address, "--port", str(self.port), "--no-dashboard"],
            "scheduler",
        )
        for role in WORKERS:
            self.start_worker(role)
        self.wait_for_workers(len(WORKERS))

    def start_worker(self, role: str) -> None:
        host = self.net[role]
        self._python(
            host,
            ["-m", "distributed.cli.dask_worker", self.address, "--host", host.address, "--name", role,
             "--nthreads", str(self.threads), "--memory-limit", "0", "--no-dashboard"],
            role,
        )

    def wait_for_workers(self, count: int, timeout: float = 180) -> None:
        done = self._check(_DASK_WAIT, self.address, str(count), str(timeout), timeout=timeout + 60)
        if done.returncode != 0:
            raise RuntimeError(f"{count} Dask workers did not join {self.address}: {done.stderr[-2000:]}")


# Ray's CLI, with longer than its fixed 30 s for a starting node to register (a busy machine needs it).
_RAY_CLI = """
import sys
from ray.scripts.scripts import main
from taskyard_ray.connection import patient_node_lookup
sys.argv[0] = "ray"
with patient_node_lookup():
    main()
"""

_PORT_OPEN = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.5)
"""

_RAY_NODES = """
import sys, ray
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0))
"""


class RayOnHosts(HostCluster):
    """A Ray head on ``head`` (no CPUs: no tasks there), a worker node on each worker host, a zero-CPU node on ``flow``.

    Args:
        cpus: CPUs each worker node declares.
    """

    runner = "ray"

    def __init__(self, net: HostNetwork, logs: Path, cpus: int = 1, port: int = 6379) -> None:
        super().__init__(net, logs, {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                                     "RAY_agent_register_timeout_ms": "300000"})
        self.env.pop("RAY_ADDRESS", None)
        self.cpus = cpus
        self.port = port
        self.address = f"{net['head'].address}:{port}"
        self.temp = Path(f"/tmp/tyray-{net.id}")  # short: Ray's socket paths must stay under ~100 chars

    def runner_kwargs(self) -> dict[str, Any]:
        return {"address": self.address, "init_kwargs": {"_node_ip_address": self.net["flow"].address}}

    def stop(self) -> None:
        super().stop()
        # Ray's own logs (drivers, raylets, GCS) live in its temp dir: kept beside the cluster's
        # logs, so that a check that failed can be read after the cluster is gone.
        sessions = self.temp / "session_latest" / "logs"
        try:
            shutil.copytree(sessions, self.logs / "ray-session-logs", dirs_exist_ok=True, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns("*.sock", "events", "old"))  # fmt: skip
        except OSError:  # none written, or no room: the teardown goes on
            pass
        shutil.rmtree(self.temp, ignore_errors=True)

    def _ray(self, host: Host, args: Sequence[str], name: str, store_bytes: int = 100_000_000) -> None:
        argv = [sys.executable, "-c", _RAY_CLI, "start", "--block", "--disable-usage-stats",
                f"--node-ip-address={host.address}", f"--object-store-memory={store_bytes}", f"--temp-dir={self.temp}",
                *args]
        log = self.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        proc = host.popen(argv, log, self.env)
        # One node at a time: nodes sharing a machine's temp dir pick their socket names as they start.
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes()[offset:]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray node on {host.role} did not start; see {log}")
            time.sleep(0.3)

    def start(self) -> None:
        self._ray(self.net["head"], ["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false"], "head")
        self.wait_for_head()
        for role in WORKERS:
            self.start_worker(role)
        self._ray(self.net["flow"], [f"--address={self.address}", "--num-cpus=0"], "flow-node")
        self.wait_for_workers(len(WORKERS))

    def wait_for_head(self, timeout: float = 180) -> None:
        """Block until the head's GCS port answers on the head host's address (asked from the flow host)."""
        done = self._check(_PORT_OPEN, self.net["head"].address, str(self.port), str(timeout), timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"the Ray head did not open {self.address} within {timeout} s; see {self.logs}")

    def start_worker(self, role: str) -> None:
        self._ray(self.net[role], [f"--address={self.address}", f"--num-cpus={self.cpus}"], role, 300_000_000)

    def wait_for_workers(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                done = self._check(_RAY_NODES, self.address, self.net["flow"].address, timeout=90)
            except subprocess.TimeoutExpired:
                continue
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines and int(lines[-1]) >= count:
                return
            last = done.stderr[-2000:]
            time.sleep(1)
        raise RuntimeError(f"{count} Ray worker nodes did not join {self.address} within {timeout} s: {last}")
