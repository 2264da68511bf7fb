"""Every ```python block in README.md and docs/ runs, so the docs cannot rot.

The blocks of one page run in order, as one script, in a fresh interpreter
(tasks defined there must work on the process runner too). A block fenced
```python notest is shown but not run (it needs a cluster, or is a fragment).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def _graphviz_missing() -> bool:
    import shutil

    try:
        import graphviz  # noqa: F401
    except ImportError:
        return True
    return shutil.which("dot") is None


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    """The page's python examples run without error as one script."""
    if any(".visualize(" in block for block in _blocks(page)) and _graphviz_missing():
        pytest.skip("drawing needs Graphviz: pip install -e '.[viz]' and apt-get install graphviz")
    script = tmp_path / "page.py"
    script.write_text("\n\n".join(_blocks(page)))
    env = {**os.environ, "TASKYARD_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{page.name} examples failed:\n{done.stdout}\n{done.stderr}"
