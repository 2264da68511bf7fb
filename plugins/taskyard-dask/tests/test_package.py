"""The taskyard-dask distribution: version, license, entry point."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points
from pathlib import Path

import taskyard_dask

PLUGIN = Path(__file__).resolve().parent.parent


class TestPackage:
    def test_version_matches_the_distribution(self) -> None:
        """taskyard_dask.__version__ is the installed distribution's version."""
        assert taskyard_dask.__version__ == distribution("taskyard-dask").version

    def test_license_file_matches_the_declared_license(self) -> None:
        """The plugin ships the Apache 2.0 text it declares."""
        assert 'license = { text = "Apache-2.0" }' in (PLUGIN / "pyproject.toml").read_text()
        assert "Apache License\n                           Version 2.0, January 2004" in (PLUGIN / "LICENSE").read_text()

    def test_registered_as_dask(self) -> None:
        """The entry point 'dask' in taskyard.runners names the runner."""
        (point,) = [ep for ep in entry_points(group="taskyard.runners") if ep.name == "dask"]
        assert point.load() is taskyard_dask.DaskTaskRunner
