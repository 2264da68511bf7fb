"""Shared fixtures: each test gets its own TASKYARD_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _taskyard_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("taskyard-home")
    monkeypatch.setenv("TASKYARD_HOME", str(home))
    monkeypatch.delenv("TASKYARD_TASK_RUNNER", raising=False)
    return home
