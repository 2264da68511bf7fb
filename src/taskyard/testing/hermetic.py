"""Every contract test runs in its own TASKYARD_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ("HermeticHome",)


class HermeticHome:
    """Base of the contract classes: an autouse fixture giving each test its own home.

    Run records and the default result storage go to a fresh directory per
    test (worker processes the runner starts during the test inherit it),
    so the suite never reads or writes the user's ``~/.taskyard`` and no
    test sees another's cache. A subclass needs no conftest for it.
    """

    @pytest.fixture(autouse=True)
    def _taskyard_home(self, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
        home = tmp_path_factory.mktemp("taskyard-home")
        monkeypatch.setenv("TASKYARD_HOME", str(home))
        monkeypatch.delenv("TASKYARD_TASK_RUNNER", raising=False)
        return home
