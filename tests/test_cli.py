"""The taskyard command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from taskyard.cli.main import cli, parse_param

FLOW_FILE = '''
from taskyard import flow, task

@task
def square(x: int) -> int:
    return x * x

@flow
def total(n: int = 3, label: str = "sum") -> str:
    return f"{label}={sum(square.map(range(n)).result())}"

@flow
def broken() -> None:
    raise RuntimeError("nope")

@task
def explode(x: int) -> int:
    raise ValueError(f"task blew up on {x}")

@flow
def task_fails() -> int:
    return explode.submit(3).result()

@flow
def nothing() -> None:
    square(2)

@flow
async def asynchronous(n: int = 3) -> int:
    futures = square.map(range(n))
    return sum([await f for f in futures])

not_a_flow = 1
'''


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command, in a fresh process (``python -m taskyard``)."""
    full_env = {**os.environ, "TASKYARD_LOGGING_CONSOLE": "0", **env}
    return subprocess.run(
        [sys.executable, "-m", "taskyard", *args], cwd=cwd, capture_output=True, text=True, timeout=180, env=full_env
    )


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(FLOW_FILE)
    return path


class TestRun:
    def test_runs_and_prints_the_result(self, flow_file: Path) -> None:
        """run prints the flow's result; --param values are parsed as JSON or kept as strings."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:total", "--param", "n=4", "--param", "label=squares"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "squares=14"
        assert re.fullmatch(r"flow run [0-9a-f]{32}", result.stderr.strip())  # the run id, for `taskyard runs`

    @pytest.mark.parametrize("runner", ["sequential", "threads", "processes"])
    def test_runner_flag(self, flow_file: Path, runner: str) -> None:
        """--runner runs the flow on the named runner."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:total", "--runner", runner])
        assert result.exit_code == 0 and result.stdout.strip() == "sum=5"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--runner", "nope"], "no task runner named 'nope'"),
            (["--param", "n=abc"], "parameter 'n'"),
            (["--param", "m=1"], "no parameter 'm'"),
            (["--param", "novalue"], "expected KEY=VALUE"),
        ],
    )
    def test_user_mistakes_are_one_line(self, flow_file: Path, args: list[str], message: str) -> None:
        """Mistakes print one line (no traceback) and exit 2."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:total", *args])
        assert result.exit_code == 2
        assert message in result.output and "Traceback" not in result.output

    def test_missing_flow_or_file(self, flow_file: Path) -> None:
        """A missing file, name or a non-flow object is a one-line error."""
        for ref, message in [("nofile.py:x", "no such file"), (f"{flow_file}:nope", "no attribute"), (f"{flow_file}:not_a_flow", "not a @flow")]:
            result = CliRunner().invoke(cli, ["run", ref])
            assert result.exit_code == 2 and message in result.output

    def test_failed_flow_exits_1(self, flow_file: Path) -> None:
        """A flow run that fails exits 1 with its message in one line, and a hint about --traceback."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:broken"])
        assert result.exit_code == 1 and "RuntimeError: nope" in result.output
        assert "Traceback" not in result.output and "--traceback shows where" in result.output

    @pytest.mark.parametrize("flag", ["--traceback", "-v", "--verbose"])
    def test_traceback_flag_shows_the_traceback(self, flow_file: Path, flag: str) -> None:
        """--traceback (or -v) prints the flow's full traceback before the error line."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:broken", flag])
        assert result.exit_code == 1
        assert "Traceback (most recent call last)" in result.output and 'raise RuntimeError("nope")' in result.output

    @pytest.mark.parametrize("runner", ["threads", "processes"])
    def test_traceback_includes_the_workers(self, flow_file: Path, runner: str) -> None:
        """A task's failure shows the traceback from where the task ran (another process too)."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:task_fails", "--runner", runner, "--traceback"])
        assert result.exit_code == 1
        assert "ValueError: task blew up on 3" in result.output
        assert "Traceback (most recent call last)" in result.output and ", in explode" in result.output

    def test_none_prints_nothing(self, flow_file: Path) -> None:
        """A flow that returns None prints nothing on stdout."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:nothing"])
        assert result.exit_code == 0 and result.stdout == ""

    @pytest.mark.parametrize("runner", ["sequential", "threads", "processes"])
    def test_async_flows_run(self, flow_file: Path, runner: str) -> None:
        """An async flow is awaited and its result printed, on every runner."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:asynchronous", "--param", "n=4", "--runner", runner])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "14"

    def test_a_file_that_fails_to_import_is_a_user_error(self, tmp_path: Path) -> None:
        """A flow file that raises on import: one line naming the error, exit 2; --traceback shows where."""
        path = tmp_path / "bad.py"
        path.write_text("import json\nvalue = json.loads('{')\n")
        result = CliRunner().invoke(cli, ["run", f"{path}:f"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"importing {path} failed: JSONDecodeError" in result.output
        verbose = CliRunner().invoke(cli, ["run", f"{path}:f", "-v"])
        assert verbose.exit_code == 2 and "Traceback (most recent call last)" in verbose.output

    def test_a_syntax_error_is_a_user_error(self, tmp_path: Path) -> None:
        """A flow file with a syntax error is a one-line error, exit 2."""
        path = tmp_path / "typo.py"
        path.write_text("def f(:\n")
        result = CliRunner().invoke(cli, ["run", f"{path}:f"])
        assert result.exit_code == 2 and "SyntaxError" in result.output and "Traceback" not in result.output

    def test_a_module_missing_an_import_is_not_reported_missing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A module that imports something missing says so, rather than that the module does not exist."""
        (tmp_path / "needs_dep.py").write_text("import surely_not_installed_anywhere\n")
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["run", "needs_dep:f"])
        assert result.exit_code == 2 and "No module named 'surely_not_installed_anywhere'" in result.output
        missing = CliRunner().invoke(cli, ["run", "no_such_module_here:f"])
        assert missing.exit_code == 2 and "no module named 'no_such_module_here'" in missing.output

    def test_a_bad_setting_is_a_user_error(self, flow_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A setting with a bad value is a one-line error naming the variable, exit 2."""
        monkeypatch.setenv("TASKYARD_LOGGING_LEVEL", "LOUD")
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:total"])
        assert result.exit_code == 2 and "TASKYARD_LOGGING_LEVEL='LOUD'" in result.output

    def test_help_documents_the_forms_params_and_exit_codes(self) -> None:
        """run --help shows FILE.py:FLOW and MODULE:FLOW, repeatable JSON --param, None, and the exit codes."""
        result = CliRunner().invoke(cli, ["run", "--help"])
        text = result.output
        assert result.exit_code == 0
        for needle in ["FILE.py:FLOW", "MODULE:FLOW", "--param KEY=VALUE can be repeated", "JSON", "returns None prints nothing", "Exit codes:", "--traceback"]:
            assert needle in text, needle


class TestRealCommand:
    def test_python_dash_m_taskyard(self, flow_file: Path) -> None:
        """python -m taskyard is the same CLI."""
        done = run_cli(["run", f"{flow_file}:total", "--param", "n=3"], flow_file.parent)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sum=5"

    def test_module_flow_found_in_the_current_directory(self, flow_file: Path) -> None:
        """MODULE:FLOW finds a module in the current directory, on the process runner too."""
        done = run_cli(["run", "flows:total", "--runner", "processes"], flow_file.parent)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sum=5"

    def test_console_script_finds_modules_in_the_cwd(self, flow_file: Path) -> None:
        """The installed ``taskyard`` script also looks in the current directory."""
        script = Path(sys.executable).with_name("taskyard")
        if not script.exists():
            pytest.skip("no taskyard script next to this interpreter (not installed with pip)")
        env = {**os.environ, "TASKYARD_LOGGING_CONSOLE": "0"}
        done = subprocess.run([str(script), "run", "flows:total"], cwd=flow_file.parent, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "sum=5"

    def test_logs_go_to_stderr_and_the_result_to_stdout(self, flow_file: Path) -> None:
        """With console logging on, stdout holds only the result."""
        done = run_cli(["run", f"{flow_file}:total"], flow_file.parent, TASKYARD_LOGGING_CONSOLE="1")
        assert done.stdout == "sum=5\n"
        assert "Beginning flow run of flow 'total'" in done.stderr


class TestHelp:
    @pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["runners", "-h"], ["bench", "-h"]])
    def test_dash_h_is_help(self, args: list[str]) -> None:
        """-h is accepted wherever --help is."""
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "Usage:" in result.output

    def test_bench_help_says_how_long_it_takes(self) -> None:
        """bench --help says how long the default run takes."""
        result = CliRunner().invoke(cli, ["bench", "--help"])
        assert "takes about" in result.output


class TestRunners:
    def test_lists_runners_with_status(self) -> None:
        """runners lists each runner with its install status and hint."""
        result = CliRunner().invoke(cli, ["runners"])
        assert result.exit_code == 0
        assert "threads" in result.output and "installed" in result.output
        for plugin in ("dask", "ray"):  # each plugin: installed, or the command that installs it
            line = next(line for line in result.output.splitlines() if line.startswith(plugin))
            assert "installed" in line.split() or f"plugins/taskyard-{plugin}" in line, line


def test_parse_param() -> None:
    """Values parse as JSON when they can."""
    assert parse_param("n=3") == ("n", 3)
    assert parse_param('xs=["a", 1]') == ("xs", ["a", 1])
    assert parse_param("s=hello") == ("s", "hello")


def test_str_parameters_keep_their_text(tmp_path: Path) -> None:
    """A str-annotated parameter takes `123` or `null` as text, not as JSON."""
    path = tmp_path / "labels.py"
    path.write_text(
        "from taskyard import flow\n@flow\ndef show(label: str, n: int = 0) -> str:\n    return f'{label!r}/{n!r}'\n"
    )
    result = CliRunner().invoke(cli, ["run", f"{path}:show", "--param", "label=123", "--param", "n=4"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "'123'/4"
