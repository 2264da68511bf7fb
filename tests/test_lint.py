"""The code passes ruff with the rules pinned in pyproject.toml, and the test tree collects as one."""

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


def test_test_modules_have_names_of_their_own() -> None:
    """No two test modules share a file name: the README's one pytest run collects the core and both plugins."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted([*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("plugins/*/tests/**/test_*.py")]):
        if path.parent.joinpath("__init__.py").exists():
            continue  # a package: pytest imports it under its dotted name
        other = seen.setdefault(path.name, path)
        if other is not path:
            clashes.append(f"{other.relative_to(ROOT)} and {path.relative_to(ROOT)}")
    assert not clashes, "rename one of each pair (e.g. test_ray_runner.py): " + "; ".join(clashes)
