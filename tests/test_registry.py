"""The runner registry: names, entry points, install hints."""

from __future__ import annotations

import pytest

from taskyard.exceptions import RunnerNotFound
from taskyard.runners import ThreadPoolTaskRunner
from taskyard.runners.registry import RunnerRegistry, resolve_runner


class TestRegistry:
    def test_builtins_and_entry_points(self) -> None:
        """The built-ins are registered; installed plugins come from entry points."""
        registry = RunnerRegistry()
        assert {"sequential", "threads", "processes"} <= set(registry.names())
        assert registry.get("threads") is ThreadPoolTaskRunner

    def test_register_and_replace(self) -> None:
        """register adds a name; a taken name needs replace=True."""
        registry = RunnerRegistry(group="taskyard.none")
        registry.register("mine", ThreadPoolTaskRunner)
        assert registry.get("mine") is ThreadPoolTaskRunner
        with pytest.raises(ValueError, match="replace=True"):
            registry.register("mine", "taskyard.runners.sequential:SequentialTaskRunner")
        registry.register("mine", "taskyard.runners.sequential:SequentialTaskRunner", replace=True)
        assert registry.get("mine").__name__ == "SequentialTaskRunner"
        registry.reset()
        assert "mine" not in registry.names()

    def test_unknown_and_unimportable(self) -> None:
        """An unknown name lists the registered ones; a broken path says what to install."""
        registry = RunnerRegistry(group="taskyard.none")
        with pytest.raises(RunnerNotFound, match="registered runners: processes, sequential, threads"):
            registry.get("nope")
        registry.register("broken", "no_such_module:Runner")
        with pytest.raises(RunnerNotFound, match="could not be imported"):
            registry.get("broken")

    def test_available_reports_install_status(self) -> None:
        """available() covers the built-ins and the known plugins with hints."""
        rows = {r.name: r for r in RunnerRegistry(group="taskyard.none").available()}
        assert rows["threads"].installed
        assert not rows["ray"].installed and rows["ray"].hint == "pip install -e plugins/taskyard-ray"

    def test_resolve_runner(self) -> None:
        """resolve_runner takes an instance, a class or a name, and rejects the rest."""
        instance = ThreadPoolTaskRunner()
        assert resolve_runner(instance) is instance
        assert isinstance(resolve_runner(ThreadPoolTaskRunner), ThreadPoolTaskRunner)
        assert isinstance(resolve_runner("threads"), ThreadPoolTaskRunner)
        with pytest.raises(TypeError, match="TaskRunner instance, class or registered name"):
            resolve_runner(42)

    def test_import_stays_light(self) -> None:
        """import taskyard loads neither dask, ray, rich nor click."""
        import subprocess
        import sys

        code = "import sys, taskyard; print(sorted(m for m in ('dask', 'distributed', 'ray', 'rich', 'click') if m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"
