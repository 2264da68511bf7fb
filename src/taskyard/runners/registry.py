"""Runner names: the built-ins and the entry-point group ``taskyard.runners``.

``registry`` maps a short name (``"threads"``, ``"dask"``) to a runner class,
or to the dotted path of one, imported on first use. Entry points of
installed plugins are read on the first lookup by name, never at import.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from taskyard.exceptions import RunnerNotFound

if TYPE_CHECKING:
    from taskyard.runners.base import TaskRunner

__all__ = ("RunnerRegistry", "RunnerInfo", "registry", "register_runner", "get_runner_class", "available_runners", "resolve_runner")

ENTRY_POINT_GROUP = "taskyard.runners"

_BUILTINS = {
    "sequential": "taskyard.runners.sequential:SequentialTaskRunner",
    "threads": "taskyard.runners.threads:ThreadPoolTaskRunner",
    "processes": "taskyard.runners.processes:ProcessPoolTaskRunner",
}

# Runners this project ships as separate packages, and the command that installs
# each. The packages are not on a package index: the command is run in the
# taskyard repository (tests/test_install.py runs every one of them).
KNOWN_PLUGINS = {
    "dask": "pip install -e plugins/taskyard-dask",
    "ray": "pip install -e plugins/taskyard-ray",
}
WHERE = "in the taskyard repository"


class RunnerInfo(NamedTuple):
    """One row of :func:`available_runners`."""

    name: str
    target: str
    installed: bool
    hint: str


class RunnerRegistry:
    """Names to runner classes. One instance, ``registry``, serves the process."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._lock = threading.Lock()
        self._targets: dict[str, Any] = {}
        self._loaded: dict[str, type[TaskRunner[Any]]] = {}
        self._scanned = False
        self.reset()

    def reset(self) -> None:
        """Forget everything but the built-ins (for tests)."""
        with self._lock:
            self._targets = dict(_BUILTINS)
            self._loaded = {}
            self._scanned = False

    @property
    def targets(self) -> Mapping[str, Any]:
        """A read-only view: name → class or ``"module:Class"`` path."""
        self._scan()
        return MappingProxyType(self._targets)

    def register(self, name: str, runner: type[TaskRunner[Any]] | str, *, replace: bool = False) -> None:
        """Register a runner class (or its ``"module:Class"`` path) under ``name``.

        Raises:
            ValueError: ``name`` is taken and ``replace`` is False.
        """
        self._scan()
        with self._lock:
            if name in self._targets and not replace and self._targets[name] != runner:
                raise ValueError(f"a runner named {name!r} is already registered; pass replace=True to replace it")
            self._targets[name] = runner
            self._loaded.pop(name, None)

    def get(self, name: str) -> type[TaskRunner[Any]]:
        """The runner class registered as ``name``.

        Raises:
            RunnerNotFound: No such name (the message lists the registered
                ones), or its package is not installed (with the install hint).
        """
        cls = self._loaded.get(name)
        if cls is not None:
            return cls
        self._scan()
        target = self._targets.get(name)
        if target is None:
            known = ", ".join(sorted(self._targets))
            if name in KNOWN_PLUGINS:
                raise RunnerNotFound(
                    f"runner {name!r} is not installed; install it {WHERE} with: {KNOWN_PLUGINS[name]} (installed: {known})"
                )
            raise RunnerNotFound(f"no task runner named {name!r}; registered runners: {known}")
        try:
            cls = _load(target)
        except ImportError as exc:
            hint = f"{KNOWN_PLUGINS[name]} ({WHERE})" if name in KNOWN_PLUGINS else f"the package that provides {target}"
            raise RunnerNotFound(f"runner {name!r} could not be imported ({exc}); it needs: {hint}") from exc
        self._loaded[name] = cls
        return cls

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._scan()
        return sorted(self._targets)

    def available(self) -> list[RunnerInfo]:
        """Registered runners and the known plugins, with whether each imports."""
        rows = []
        for name in sorted(set(self.names()) | set(KNOWN_PLUGINS)):
            target = self._targets.get(name)
            try:
                ok = target is not None and self.get(name) is not None
            except RunnerNotFound:
                ok = False
            path = target if isinstance(target, str) else f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"
            rows.append(RunnerInfo(name, path if target is not None else "", ok, "" if ok else KNOWN_PLUGINS.get(name, "")))
        return rows

    def _scan(self) -> None:
        if self._scanned:
            return
        from importlib.metadata import entry_points

        found = {ep.name: ep.value for ep in entry_points(group=self._group)}
        with self._lock:
            for name, value in found.items():
                self._targets.setdefault(name, value)
            self._scanned = True


def _load(target: Any) -> type[TaskRunner[Any]]:
    if not isinstance(target, str):
        return target  # type: ignore[no-any-return]
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


registry = RunnerRegistry()


def register_runner(name: str, runner: type[TaskRunner[Any]] | str, *, replace: bool = False) -> None:
    """Register a runner under ``name`` in the process-wide registry."""
    registry.register(name, runner, replace=replace)


def get_runner_class(name: str) -> type[TaskRunner[Any]]:
    """The runner class registered as ``name`` (see :meth:`RunnerRegistry.get`)."""
    return registry.get(name)


def available_runners() -> list[RunnerInfo]:
    """Every registered or known runner with its install status."""
    return registry.available()


def resolve_runner(spec: Any) -> TaskRunner[Any]:
    """Turn a runner instance, class or registered name into a runner instance.

    Raises:
        RunnerNotFound: ``spec`` is an unknown name.
        TypeError: ``spec`` is none of the three.
    """
    from taskyard.runners.base import TaskRunner

    if isinstance(spec, TaskRunner):
        return spec
    if isinstance(spec, type) and issubclass(spec, TaskRunner):
        return spec()
    if isinstance(spec, str):
        return registry.get(spec)()
    raise TypeError(f"task_runner must be a TaskRunner instance, class or registered name, not {spec!r}")
