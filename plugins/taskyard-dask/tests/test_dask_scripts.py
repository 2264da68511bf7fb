"""Flow scripts on a runner-started LocalCluster, run as real processes: what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from taskyard import flow, get_run_context, task
from taskyard_dask import DaskTaskRunner

CLUSTER = 'cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}'


def _run(tmp_path: Path, source: str, stdin: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKYARD_PROGRESS": "0"}
    code = textwrap.dedent(source).replace("CLUSTER", CLUSTER)
    if stdin:
        return subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    script = tmp_path / "script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


NO_GUARD = """
from pathlib import Path
from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

with open(Path(IMPORTS), "a") as seen:  # one line per import of this script
    seen.write("imported\\n")

@task
def sq(x):
    return x * x

@flow(task_runner=DaskTaskRunner(CLUSTER))
def f():
    return sq.map(range(6)).result()

print(f())
"""  # IMPORTS: a file the script appends to when imported


class TestScriptWithoutMainGuard:
    def test_runs_once_on_worker_processes(self, tmp_path: Path) -> None:
        """A script with no `if __name__ == "__main__":` guard runs its flow once; the workers never import it."""
        imports = tmp_path / "imports.txt"
        done = _run(tmp_path, NO_GUARD.replace("IMPORTS", repr(str(imports))))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[0, 1, 4, 9, 16, 25]"
        assert imports.read_text().splitlines() == ["imported"]
        assert "Nanny failed to start" not in done.stderr and "Traceback" not in done.stderr

    def test_code_from_stdin(self, tmp_path: Path) -> None:
        """A flow piped to `python -` runs on worker processes too."""
        imports = tmp_path / "imports.txt"
        done = _run(tmp_path, NO_GUARD.replace("IMPORTS", repr(str(imports))), stdin=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[0, 1, 4, 9, 16, 25]"


REPEATED = """
from taskyard import flow, task
from taskyard_dask import DaskTaskRunner

@task
def inc(x):
    return x + 1

@flow(task_runner=DaskTaskRunner(CLUSTER))
def f(n):
    return sum(inc.map(range(n)).result())

if __name__ == "__main__":
    for _ in range(RUNS):  # each flow run starts and closes its own cluster
        print(f(300))
"""


class TestQuietShutdown:
    def test_closing_the_cluster_logs_no_errors(self, tmp_path: Path) -> None:
        """Five flow runs, each closing its LocalCluster: not one ERROR line (no heartbeat race at close)."""
        done = _run(tmp_path, REPEATED.replace("RUNS", "5"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["45150"] * 5
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line or "Traceback" in line]
        assert errors == [], done.stderr


@task
def where_am_i() -> str:
    return "worker"


class TestDashboard:
    def test_the_dashboard_page_is_served(self) -> None:
        """The runner's dashboard link answers with Dask's status page (bokeh installed with the plugin)."""
        with DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}) as runner:
            link = runner.dashboard_link
            assert link is not None and link.startswith("http://127.0.0.1:") and link.endswith("/status")
            with urllib.request.urlopen(link, timeout=60) as page:  # loopback only
                status, body = page.status, page.read().decode()
        assert status == 200
        assert "bokeh" in body.lower() and "needs bokeh" not in body.lower(), body[:500]

    def test_the_link_is_in_the_run_context_and_the_first_line(self, caplog: pytest.LogCaptureFixture) -> None:
        """get_run_context().flow_run.dashboard_link and the flow-start line carry the link; the runner logs it only at DEBUG."""
        import logging

        caplog.set_level(logging.INFO, logger="taskyard")

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False}))
        def f() -> str | None:
            where_am_i.submit().wait()
            return get_run_context().flow_run.dashboard_link

        link = f()
        assert link is not None and link.startswith("http://127.0.0.1:")
        starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Beginning flow run")]
        assert len(starts) == 1 and f"(dashboard: {link})" in starts[0]
        assert not [r for r in caplog.records if r.name == "taskyard.dask" and link in r.getMessage()]
