"""A runner name → what the benchmark runs on: the taskyard runner and the raw backend under it.

::

    open_target("threads") ── ThreadPoolTaskRunner()      + ThreadPoolExecutor (same workers)
    open_target("processes") ─ ProcessPoolTaskRunner()    + ProcessPoolExecutor (same workers,
                                                              same start method)
    open_target("dask") ───── a LocalCluster started here; DaskTaskRunner(address=…) for flows;
                              the raw baseline uses the runner's own ``.client`` on that cluster
    open_target("ray") ────── a local Ray started by a RayTaskRunner; flows use RayTaskRunner()
                              (Ray initialised: shared) + ``ray.remote`` / ``ray.get``
    open_target(other) ────── the registered runner by name; no raw baseline

Each flow run duplicates the runner it is given, so a cluster is started here,
once, and every flow run's runner connects to it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from taskyard.bench.baselines import DaskBackend, LoopBackend, ProcessBackend, RawBackend, RayBackend, ThreadBackend
from taskyard.runners import available_runners, get_runner_class

__all__ = ("Target", "SkipTarget", "open_target", "runner_names")


class SkipTarget(Exception):
    """This runner cannot run here (its plugin or backend is missing); the message says why."""


@dataclass
class Target:
    """One runner as the harness uses it.

    Attributes:
        name: The registry name.
        spec: What ``task_runner_override`` receives (an unstarted runner or a name).
        raw: The raw backend underneath, started and ready; None if there is none.
        workers: How many tasks the runner runs at once (sizes the warm-up).
        note: Anything the report should say about this target.
    """

    name: str
    spec: Any
    raw: RawBackend | None
    workers: int
    note: str = ""


def runner_names() -> list[str]:
    """Every registered or known runner name (installed or not), sorted."""
    return sorted(info.name for info in available_runners())


@contextlib.contextmanager
def open_target(name: str) -> Iterator[Target]:
    """Start what runner ``name`` needs for a benchmark; release it on exit.

    Raises:
        SkipTarget: The runner's plugin or backend is not installed.
    """
    from taskyard.exceptions import RunnerNotFound

    try:
        cls = get_runner_class(name)
    except RunnerNotFound as exc:
        raise SkipTarget(str(exc)) from None
    opener = _OPENERS.get(name, _open_other)
    with opener(cls, name) as target:
        yield target


@contextlib.contextmanager
def _open_sequential(cls: Any, name: str) -> Iterator[Target]:
    yield Target(name, cls(), LoopBackend(), 1)


@contextlib.contextmanager
def _open_threads(cls: Any, name: str) -> Iterator[Target]:
    runner = cls()
    raw = ThreadBackend(runner.max_workers)
    try:
        yield Target(name, runner, raw, runner.max_workers)
    finally:
        raw.close()


@contextlib.contextmanager
def _open_processes(cls: Any, name: str) -> Iterator[Target]:
    runner = cls()
    raw = ProcessBackend(runner.max_workers, runner.start_method)
    try:
        yield Target(name, runner, raw, runner.max_workers, note=f"start method {runner.start_method}")
    finally:
        raw.close()


@contextlib.contextmanager
def _open_dask(cls: Any, name: str) -> Iterator[Target]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SkipTarget(f"runner 'dask' needs dask[distributed]: {exc}") from None
    workers = os.cpu_count() or 1
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    probe = cls(address=cluster.scheduler_address)
    try:
        probe.start()
        client = getattr(probe, "client", None)
        own_client = None
        note = f"LocalCluster {workers} processes x 1 thread; raw baseline on the runner's own client"
        if client is None:  # a runner without `.client`: a client of our own on the same cluster
            client = own_client = Client(cluster.scheduler_address, set_as_default=False)  # type: ignore[no-untyped-call]
            note = f"LocalCluster {workers} processes x 1 thread; raw baseline on a separate client"
        try:
            yield Target(
                name,
                cls(address=cluster.scheduler_address),
                DaskBackend(client, cluster.scheduler_address),
                workers,
                note,
            )
        finally:
            if own_client is not None:
                own_client.close()  # type: ignore[no-untyped-call]
    finally:
        probe.shutdown()
        cluster.close()


@contextlib.contextmanager
def _open_ray(cls: Any, name: str) -> Iterator[Target]:
    try:
        import ray  # noqa: F401 - only to skip cleanly without it
    except ImportError as exc:
        raise SkipTarget(f"runner 'ray' needs ray: {exc}") from None
    workers = os.cpu_count() or 1
    # One local Ray for the whole bench, started the way the runner starts it
    # (127.0.0.1 only); each flow run's runner and the raw baseline share it.
    owner = cls(init_kwargs={"num_cpus": workers}).start()
    try:
        yield Target(name, cls(), RayBackend(), workers, f"local Ray, {workers} CPUs")
    finally:
        owner.shutdown()


@contextlib.contextmanager
def _open_other(cls: Any, name: str) -> Iterator[Target]:
    yield Target(name, name, None, os.cpu_count() or 1, note=f"no raw baseline for runner {name!r}")


_OPENERS = {
    "sequential": _open_sequential,
    "threads": _open_threads,
    "processes": _open_processes,
    "dask": _open_dask,
    "ray": _open_ray,
}
