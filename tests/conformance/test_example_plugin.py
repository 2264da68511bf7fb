"""The runner from docs/runners.md passes the whole contract, as a third-party plugin would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from taskyard.testing import TaskRunnerContract

_DOC = Path(__file__).resolve().parents[2] / "docs" / "runners.md"


def _load_example_runner() -> Any:
    source = _DOC.read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", source, re.S) if "class ExecutorTaskRunner" in b)
    namespace: dict[str, Any] = {"__name__": "docs_runner_example"}
    exec(compile(block, str(_DOC), "exec"), namespace)
    return namespace["ExecutorTaskRunner"]


ExecutorTaskRunner = _load_example_runner()


class TestDocumentedExampleRunner(TaskRunnerContract):
    @pytest.fixture
    def runner(self) -> Any:
        return ExecutorTaskRunner(max_workers=4)
