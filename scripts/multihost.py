"""A Dask or Ray cluster across simulated hosts on one Linux box, by hand.

Needs root and iproute2's ``ip`` (the hosts are network namespaces; see
``taskyard.testing.netns``)::

    sudo python scripts/multihost.py up dask        # build the hosts, start the cluster, print how to use it
    sudo python scripts/multihost.py down           # stop every process (by pid) and delete the namespaces
    sudo python scripts/multihost.py bench ray --scale 100000   # up, measure, down: prints JSON figures

``up`` leaves the cluster running and writes its state to
``/tmp/taskyard-multihost.json``; run a flow on the flow host with
``ip netns exec <flow netns> python my_flow.py``. ``bench`` runs the checks
of the multi-host tests at full size (the chain, the map-reduce, the
100,000-task map) and prints each report: seconds, tasks/s, the flow
process's peak RSS, and the bytes through the flow host's interface.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from taskyard.testing.hostclusters import DaskOnHosts, HostCluster, RayOnHosts
from taskyard.testing.netns import HostNetwork, sweep_stale, unavailable_reason

STATE = Path(tempfile.gettempdir()) / "taskyard-multihost.json"
CLUSTERS: dict[str, type[HostCluster]] = {"dask": DaskOnHosts, "ray": RayOnHosts}


def _cluster(backend: str, net: HostNetwork, logs: Path) -> HostCluster:
    cluster = CLUSTERS[backend](net, logs)
    cluster.env["TASKYARD_HOME"] = str(logs / "home")
    return cluster


def up(backend: str) -> int:
    logs = Path(tempfile.mkdtemp(prefix="taskyard-multihost-"))
    net = HostNetwork(prefix="tyhostup")  # outlives this process: never swept as stale
    net.__enter__()
    cluster = _cluster(backend, net, logs)
    try:
        cluster.start()
    except BaseException:
        net.close()
        raise
    state = {
        "backend": backend, "namespaces": net.namespaces(), "logs": str(logs),
        "hosts": {role: {"netns": h.netns, "address": h.address} for role, h in net.hosts.items()},
        "runner": cluster.runner, "runner_kwargs": cluster.runner_kwargs(),
    }
    STATE.write_text(json.dumps(state, indent=2))
    flow_ns = net["flow"].netns
    print(json.dumps(state, indent=2))
    print(f"\nRun a flow on the flow host:\n  ip netns exec {flow_ns} {sys.executable} -m taskyard.testing.hostflows "
          f"scale --size 1000 --runner {cluster.runner} --runner-kwargs '{json.dumps(cluster.runner_kwargs())}'")
    print(f"Stop it all:\n  {sys.executable} {__file__} down")
    return 0


def down() -> int:
    """Stop the processes of every namespace ``up`` made (by pid), then delete the namespaces."""
    if not STATE.exists():
        print("nothing is up (no state file); stale namespaces of dead runs are swept:", sweep_stale())
        return 0
    state = json.loads(STATE.read_text())
    import subprocess

    for name in reversed(state["namespaces"]):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    import shutil

    shutil.rmtree(Path(f"/tmp/tyray-{state['namespaces'][0].removesuffix('-br')}"), ignore_errors=True)
    STATE.unlink()
    print("down:", ", ".join(state["namespaces"]))
    return 0


def bench(backend: str, scale: int) -> int:
    logs = Path(tempfile.mkdtemp(prefix="taskyard-multihost-"))
    runs = [("chain", {"size": 200, "nbytes": 1_000_000}),
            ("mapreduce", {"size": 1000, "nbytes": 100_000 if backend == "dask" else 200_000}),
            ("scale", {"size": scale})]
    with HostNetwork() as net:
        cluster = _cluster(backend, net, logs)
        try:
            cluster.start()
            for workload, options in runs:
                report = cluster.run_flow(workload, timeout=7200, **options)
                stderr = report.pop("stderr")
                if report["exit_code"] != 0:
                    print(stderr[-4000:], file=sys.stderr)
                if workload == "scale" and report.get("seconds"):
                    report["tasks_per_s"] = round(scale / report["seconds"], 1)
                print(json.dumps({"backend": backend, "workload": workload, **options, **report}), flush=True)
        finally:
            cluster.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up").add_argument("backend", choices=sorted(CLUSTERS))
    sub.add_parser("down")
    bench_parser = sub.add_parser("bench")
    bench_parser.add_argument("backend", choices=sorted(CLUSTERS))
    bench_parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"multihost: {reason}", file=sys.stderr)
        return 2
    if args.command == "up":
        return up(args.backend)
    if args.command == "down":
        return down()
    return bench(args.backend, args.scale)


if __name__ == "__main__":
    sys.exit(main())
