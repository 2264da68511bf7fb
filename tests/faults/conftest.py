"""The fault harness (taskyard.testing.faults): real processes, real signals, bounded waits.

Every test under tests/faults carries the ``faults`` marker
(``pytest -m faults`` runs only them, ``-m "not faults"`` skips them). The
``flow_process`` fixture comes with taskyard's pytest plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="psutil is in the test extra; install taskyard[test]")

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)
