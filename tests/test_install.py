"""Every install command the project prints or documents works, from this repository.

The packages are not on a package index, so a command must name paths in the
repository (``pip install -e plugins/taskyard-dask``), never a bare package
name of ours. The slow test tries the commands in a throwaway virtualenv (pip
uses its local caches).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from taskyard.runners.registry import KNOWN_PLUGINS

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = {"taskyard", "taskyard-dask", "taskyard-ray", "taskyard_dask", "taskyard_ray"}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("plugins/*/README.md")),
         ROOT / "benchmarks" / "README.md"]  # fmt: skip
BUILD_REQUIRES = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
COMMAND = re.compile(r"(?:python3? -m )?pip install ([^`#\n&|;]+)")


def documented_commands() -> dict[str, list[str]]:
    """``pip install`` argument lists found in the docs and the runner hints, with where each was found."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for match in COMMAND.finditer(page.read_text()):
            found.setdefault(match.group(1).strip(), []).append(str(page.relative_to(ROOT)))
    for name, hint in KNOWN_PLUGINS.items():
        found.setdefault(COMMAND.match(hint).group(1).strip(), []).append(f"runner hint {name!r}")  # type: ignore[union-attr]
    return found


def _in_checkout(args: str) -> bool:
    """False for a command naming a plugin directory this checkout does not have yet (ray lands separately)."""
    paths = [a for a in shlex.split(args) if a.startswith("plugins/")]
    return all((ROOT / re.split(r"\[", p)[0]).is_dir() for p in paths)


def _requirement(arg: str) -> str:
    return re.split(r"[\[<>=!~ ]", arg.strip("'\""), maxsplit=1)[0]


class TestCommandsNameThisRepository:
    def test_no_command_installs_our_packages_from_an_index(self) -> None:
        """No documented or printed command asks an index for taskyard or its plugins."""
        bad = []
        for args, where in documented_commands().items():
            for arg in shlex.split(args):
                if not arg.startswith("-") and _requirement(arg) in OUR_PACKAGES:
                    bad.append(f"pip install {args}  ({', '.join(where)})")
        assert not bad, "commands that would look for our packages on an index:\n" + "\n".join(bad)

    @pytest.mark.parametrize("name", sorted(KNOWN_PLUGINS))
    def test_every_hint_names_a_plugin_in_the_repository(self, name: str) -> None:
        """Each runner hint installs a plugin directory of this repository."""
        path = shlex.split(KNOWN_PLUGINS[name])[-1]
        assert path == f"plugins/taskyard-{name}"
        assert (ROOT / path / "pyproject.toml").is_file(), f"{name}: {KNOWN_PLUGINS[name]} names no plugin directory"

    def test_advertised_extras_exist(self) -> None:
        """Every extra a command names is declared by the package it installs."""
        for args in documented_commands():
            for arg in shlex.split(args):
                match = re.fullmatch(r"(.+?)\[([\w,]+)\]", arg)
                if match is None or not (ROOT / match.group(1) / "pyproject.toml").is_file():
                    continue  # not a project of this repository (bare names are the test above's)
                project = ROOT / match.group(1)
                declared = tomllib.loads((project / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
                for extra in match.group(2).split(","):
                    assert extra in declared, f"{arg}: {project.name} has no extra {extra!r}"


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute on a quiet machine; pip is slow on a busy one
def test_each_command_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """In a new virtualenv the core's documented install works, and every documented command resolves.

    The core (``pip install -e .``, the README's first command) is installed
    as a user types it. The others are resolved together in one
    ``pip install --dry-run``: their paths, extras and every dependency
    they bring must be found, which is where a documented command goes
    wrong. Installing each for real took ~4 minutes; the heaviest of them
    (the README's test command) is installed for real by ``.ci/run``.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    commands = {args: where for args, where in documented_commands().items() if _in_checkout(args)}
    assert "-e ." in commands, "no documented install of the core alone"

    def run(*args: str, what: str) -> None:
        done = subprocess.run([*pip, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{what} failed:\n{done.stderr[-3000:]}"

    run("-e", ".", what="pip install -e .")
    done = subprocess.run([python, "-c", "import taskyard; print(taskyard.__name__)"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run(*BUILD_REQUIRES, what="installing the build backend")  # shared by the editable builds below
    others = [args for args in commands if args != "-e ."]
    every = [arg for args in others for arg in shlex.split(args)]
    listed = "\n".join(f"pip install {args}  ({', '.join(commands[args])})" for args in others)
    run("--dry-run", "--no-build-isolation", *every, what=f"resolving the documented commands:\n{listed}\n")


def test_license_matches_the_declared_license() -> None:
    """The repository's LICENSE is the Apache 2.0 text pyproject.toml declares."""
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
