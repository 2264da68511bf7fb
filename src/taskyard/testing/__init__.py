"""Test support: the runner conformance suite and a pytest plugin.

``TaskRunnerContract`` is the contract every task runner passes. A runner's
test module subclasses it and provides a ``runner`` fixture::

    from taskyard.testing import TaskRunnerContract

    class TestMyRunner(TaskRunnerContract):
        @pytest.fixture
        def runner(self):
            return MyTaskRunner(...)
"""

from taskyard.testing.conformance import TaskRunnerContract

__all__ = ("TaskRunnerContract",)
