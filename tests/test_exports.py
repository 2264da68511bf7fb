"""The public names: DESIGN.md's API exists, and every __all__ matches its module."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import taskyard

DESIGN_NAMES = {
    "flow", "task", "Flow", "Task",
    "unmapped", "allow_failure", "quote",
    "wait", "as_completed",
    "tags", "get_run_logger", "get_run_context",
    "State", "StateType",
    "task_input_hash", "exponential_backoff",
}  # fmt: skip
RUNNER_NAMES = {"TaskRunner", "SequentialTaskRunner", "ThreadPoolTaskRunner", "ProcessPoolTaskRunner"}


def _modules() -> list[str]:
    names = ["taskyard"]
    for info in pkgutil.walk_packages(taskyard.__path__, "taskyard."):
        if not info.name.startswith(("taskyard.bench", "taskyard.cli")):
            names.append(info.name)
    return names


def test_design_names_are_exported() -> None:
    """Every name DESIGN.md lists imports from taskyard and taskyard.runners."""
    from taskyard import runners

    assert set(taskyard.__all__) >= DESIGN_NAMES
    for name in RUNNER_NAMES:
        assert getattr(runners, name).__name__ == name


@pytest.mark.parametrize("module_name", _modules())
def test_all_names_exist(module_name: str) -> None:
    """Each module's __all__ is a tuple of names the module defines."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, tuple), f"{module_name}.__all__ should be a tuple of its public names"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names missing attributes: {missing}"


# Prefect's import paths that a ported flow keeps (docs/coming-from-prefect.md).
PREFECT_PATHS = {
    "taskyard.task_runners": {"TaskRunner", "ThreadPoolTaskRunner", "ProcessPoolTaskRunner"},
    "taskyard.cache_policies": {"INPUTS", "TASK_SOURCE", "RUN_ID", "FLOW_PARAMETERS", "DEFAULT", "NONE", "NO_CACHE"},
    "taskyard.logging": {"get_run_logger"},
    "taskyard.utilities.annotations": {"unmapped", "quote", "allow_failure"},
    "taskyard.runtime": {"flow_run", "task_run"},
    "taskyard.futures": {"wait", "as_completed", "resolve_futures_to_states", "resolve_futures_to_results"},
    "taskyard.states": {"State", "StateType", "Completed", "Failed", "Crashed", "Cancelled", "Pending", "Running"},
    "taskyard.tasks": {"Task", "task", "task_input_hash", "exponential_backoff"},
    "taskyard.flows": {"Flow", "flow"},
}


@pytest.mark.parametrize("module_name", sorted(PREFECT_PATHS))
def test_prefect_import_paths_exist(module_name: str) -> None:
    """Each Prefect-shaped module exports the names a Prefect flow imports from it."""
    module = importlib.import_module(module_name)
    assert PREFECT_PATHS[module_name] <= set(module.__all__)
