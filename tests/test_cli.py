"""The taskyard command line."""

from __future__ import annotations

import re
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

not_a_flow = 1
'''


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
        """A flow run that fails exits 1 with its message."""
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:broken"])
        assert result.exit_code == 1 and "RuntimeError: nope" in result.output


class TestRunners:
    def test_lists_runners_with_status(self) -> None:
        """runners lists each runner with its install status and hint."""
        result = CliRunner().invoke(cli, ["runners"])
        assert result.exit_code == 0
        assert "threads" in result.output and "installed" in result.output
        assert "pip install taskyard-ray" in result.output


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
