"""The conformance suite over the three built-in runners."""

from __future__ import annotations

import pytest

from taskyard.runners import ProcessPoolTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner
from taskyard.testing import TaskRunnerContract


class TestSequentialTaskRunner(TaskRunnerContract):
    @pytest.fixture
    def runner(self) -> SequentialTaskRunner:
        return SequentialTaskRunner()


class TestThreadPoolTaskRunner(TaskRunnerContract):
    @pytest.fixture
    def runner(self) -> ThreadPoolTaskRunner:
        return ThreadPoolTaskRunner(max_workers=4)


class TestProcessPoolTaskRunner(TaskRunnerContract):
    @pytest.fixture
    def runner(self) -> ProcessPoolTaskRunner:
        return ProcessPoolTaskRunner(max_workers=2)
