"""The public API's type hints hold: mypy --strict checks tests/typing/ and the core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is in the test extra; install taskyard[test]")
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_api_usage_type_checks() -> None:
    """assert_type samples of task/flow/submit/map/return_state pass mypy --strict."""
    done = _mypy("--strict", "tests/typing/api_types.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_core_is_strictly_typed() -> None:
    """The core package passes mypy --strict (configured in pyproject.toml)."""
    done = _mypy()
    assert done.returncode == 0, done.stdout + done.stderr
