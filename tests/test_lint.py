"""The code passes ruff with the rules pinned in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    """ruff finds nothing in the core, the plugins, the tests and the benchmarks."""
    pytest.importorskip("ruff", reason="ruff is in the test extra; install taskyard[test]")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "plugins", "benchmarks", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
