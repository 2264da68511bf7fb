"""Console logging: the handler on the ``taskyard`` loggers, its settings, and the lines a run logs.

Most tests run a flow in a fresh interpreter: pytest puts handlers on the root
logger, which (like any user's logging configuration) turns the console
handler off.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskyard.console import ConsoleHandler, RunFormatter, run_label
from taskyard.settings import DEFAULT_LOG_FORMAT, Settings

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (DEBUG|INFO|WARNING|ERROR|CRITICAL) *\| (.+?) - (.*)$")

FLOWS = '''
import logging
from taskyard import flow, task, get_run_logger

@task(retries=1, retry_delay_seconds=0.01)
def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x

@task(log_prints=True)
def shout(word: str) -> str:
    print(f"printed {word}")
    get_run_logger().info("logged %s", word)
    get_run_logger().debug("debug %s", word)
    return word

@flow(flow_run_name="demo-run")
def demo(xs: list[int], runner: str = "threads") -> int:
    shout.submit("hi").result()
    return sum(v for v in square.map(xs).result(raise_on_failure=False) if isinstance(v, int))
'''


def run_script(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (after FLOWS) in a fresh interpreter with the given TASKYARD_* settings."""
    script = tmp_path / "script.py"
    script.write_text(FLOWS + "\n" + textwrap.dedent(body))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_") or k == "TASKYARD_HOME"}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=tmp_path
    )


def lines(stderr: str) -> list[tuple[str, str, str]]:
    """(level, run label, message) of each console line."""
    return [m.groups() for m in map(LINE.match, stderr.splitlines()) if m]  # type: ignore[misc]


def main_guarded(code: str) -> str:
    return "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(code), "    ")


class TestDefaultConsole:
    def test_a_flow_run_logs_to_the_console_by_default(self, tmp_path: Path) -> None:
        """Without any logging set-up, lifecycle lines and run logs appear on stderr with time, level and run name."""
        done = run_script(tmp_path, main_guarded("print('result', demo([1, 2]))"))
        assert done.returncode == 0, done.stderr
        assert "result 5" in done.stdout
        got = lines(done.stderr)
        assert ("INFO", "Flow run 'demo-run'", "Beginning flow run of flow 'demo' on runner 'threads'") in got
        assert ("INFO", "Flow run 'demo-run'", "Submitting 2 runs of task 'square'") in got
        task_lines = [(level, message) for level, label, message in got if label.startswith("Task run 'shout-")]
        assert task_lines == [("INFO", "printed hi"), ("INFO", "logged hi")]  # log_prints output appears
        last = got[-1]
        assert last[:2] == ("INFO", "Flow run 'demo-run'")
        assert re.fullmatch(r"Finished in state Completed in \d+\.\d\d s; task runs: 3 Completed", last[2])

    def test_only_the_taskyard_logger_gets_a_handler(self, tmp_path: Path) -> None:
        """The root logger keeps no handler; the ``taskyard`` logger gets exactly one console handler (the run store's recorder aside)."""
        body = main_guarded(
            """
            demo([1])
            demo([2])
            print([type(h).__name__ for h in logging.getLogger().handlers])
            print([type(h).__name__ for h in logging.getLogger("taskyard").handlers if not getattr(h, "taskyard_internal", False)])
            """
        )
        done = run_script(tmp_path, body)
        assert done.stdout.splitlines() == ["[]", "['ConsoleHandler']"], done.stderr

    def test_retries_and_failures_are_logged_with_the_error(self, tmp_path: Path) -> None:
        """A retry names the attempt, delay and error; a failure logs its exception and traceback."""
        done = run_script(tmp_path, main_guarded("demo([1, -2])"))
        got = lines(done.stderr)
        retry = [m for level, label, m in got if m.startswith("Retrying")]
        assert retry == ["Retrying in 0.01 s (attempt 2 of 2) after: ValueError: negative: -2"]
        failed = [(level, m) for level, label, m in got if m.startswith("Finished in state Failed")]
        assert failed == [("ERROR", "Finished in state Failed after 2 attempts: ValueError: negative: -2")]
        assert "Traceback (most recent call last)" in done.stderr and 'raise ValueError(f"negative: {x}")' in done.stderr
        assert got[-1][2].endswith("task runs: 2 Completed, 1 Failed")

    def test_a_failed_flow_run_logs_its_exception(self, tmp_path: Path) -> None:
        """A flow run that raises ends with one ERROR line naming the exception (the traceback goes to the caller)."""
        body = """
            from taskyard import flow

            @flow(flow_run_name="boom-run")
            def boom() -> None:
                raise KeyError("missing")

            if __name__ == "__main__":
                boom(return_state=True)
        """
        done = run_script(tmp_path, body)
        level, label, message = lines(done.stderr)[-1]
        assert (level, label) == ("ERROR", "Flow run 'boom-run'")
        assert re.fullmatch(r"Finished in state Failed in \d+\.\d\d s: KeyError: 'missing'", message)
        assert "Traceback" not in done.stderr

    def test_a_large_map_is_summarised(self, tmp_path: Path) -> None:
        """A map of 200 failing runs logs the first 10 failures one by one and counts the rest in the summary."""
        done = run_script(tmp_path, main_guarded("demo([-1] * 200)"))
        got = lines(done.stderr)
        assert sum(m.startswith("Finished in state Failed") for _, _, m in got) == 10
        assert sum(m.startswith("Retrying") for _, _, m in got) == 10
        assert got[-1][2].endswith("task runs: 200 Failed, 1 Completed")
        assert len(got) < 30

    def test_worker_process_records_appear_once(self, tmp_path: Path) -> None:
        """On the process runner, a task's prints and logs appear once on the flow's console."""
        body = main_guarded(
            """
            demo.with_options(task_runner="processes")([3])
            """
        )
        done = run_script(tmp_path, body)
        messages = [m for _, label, m in lines(done.stderr) if label.startswith("Task run 'shout-")]
        assert messages == ["printed hi", "logged hi"], done.stderr


class TestSettings:
    def test_level_setting(self, tmp_path: Path) -> None:
        """TASKYARD_LOGGING_LEVEL=WARNING hides INFO lines; DEBUG shows debug records."""
        quiet = run_script(tmp_path, main_guarded("demo([1, -1])"), TASKYARD_LOGGING_LEVEL="WARNING")
        assert {level for level, _, _ in lines(quiet.stderr)} == {"ERROR"}
        loud = run_script(tmp_path, main_guarded("demo([1])"), TASKYARD_LOGGING_LEVEL="debug")
        assert ("DEBUG", "debug hi") in [(level, m) for level, _, m in lines(loud.stderr)]

    def test_console_off(self, tmp_path: Path) -> None:
        """TASKYARD_LOGGING_CONSOLE=0 leaves the loggers without a handler: nothing is printed."""
        done = run_script(tmp_path, main_guarded("demo([1])"), TASKYARD_LOGGING_CONSOLE="0")
        assert done.returncode == 0 and done.stderr == ""

    def test_format_setting(self, tmp_path: Path) -> None:
        """TASKYARD_LOGGING_FORMAT replaces the format; run fields are available to it."""
        done = run_script(
            tmp_path, main_guarded("demo([1])"), TASKYARD_LOGGING_FORMAT="%(levelname)s [%(flow_run_name)s] %(message)s"
        )
        assert "INFO [demo-run] Submitting 1 run of task 'square'" in done.stderr.splitlines()

    def test_a_bad_setting_names_the_variable(self) -> None:
        """An unknown level or flag value raises ValueError naming the variable."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TASKYARD_LOGGING_LEVEL", "LOUD")
            with pytest.raises(ValueError, match="TASKYARD_LOGGING_LEVEL='LOUD'"):
                Settings.from_env()
            mp.setenv("TASKYARD_LOGGING_LEVEL", "info")
            mp.setenv("TASKYARD_PROGRESS", "maybe")
            with pytest.raises(ValueError, match="TASKYARD_PROGRESS='maybe'"):
                Settings.from_env()

    def test_settings_are_read_at_each_flow_run(self, tmp_path: Path) -> None:
        """Changing TASKYARD_LOGGING_LEVEL between two runs in one process takes effect."""
        body = main_guarded(
            """
            import os
            os.environ["TASKYARD_LOGGING_LEVEL"] = "ERROR"
            demo([1])
            os.environ["TASKYARD_LOGGING_LEVEL"] = "INFO"
            demo([2])
            """
        )
        done = run_script(tmp_path, body)
        starts = [m for _, _, m in lines(done.stderr) if m.startswith("Beginning")]
        assert len(starts) == 1


class TestUserConfigurationWins:
    def test_basic_config_replaces_the_console_handler(self, tmp_path: Path) -> None:
        """With logging.basicConfig, records go to the user's handler in the user's format, once."""
        body = main_guarded(
            """
            logging.basicConfig(level=logging.INFO, format="USER %(levelname)s %(message)s")
            demo([1])
            """
        )
        done = run_script(tmp_path, body)
        assert lines(done.stderr) == []
        assert done.stderr.splitlines().count("USER INFO logged hi") == 1

    def test_configuring_later_takes_the_handler_away(self, tmp_path: Path) -> None:
        """A handler added after a first run wins from the next run on: no line is printed twice."""
        body = main_guarded(
            """
            demo([1])
            logging.basicConfig(level=logging.INFO, format="USER %(message)s")
            demo([2])
            """
        )
        done = run_script(tmp_path, body)
        assert len([m for _, _, m in lines(done.stderr) if m == "logged hi"]) == 1
        assert done.stderr.splitlines().count("USER logged hi") == 1

    def test_a_level_set_by_the_user_wins(self, tmp_path: Path) -> None:
        """A level set on the ``taskyard`` logger is kept, and the console handler shows what it lets through."""
        body = main_guarded(
            """
            logging.getLogger("taskyard").setLevel(logging.DEBUG)
            demo([1])
            """
        )
        done = run_script(tmp_path, body)
        assert ("DEBUG", "debug hi") in [(level, m) for level, _, m in lines(done.stderr)]


class TestFormatter:
    def _record(self, **extra: object) -> logging.LogRecord:
        record = logging.LogRecord("taskyard.runs", logging.INFO, __file__, 1, "hello %s", ("there",), None)
        record.__dict__.update(extra)
        return record

    def test_run_label_comes_from_extra_fields(self) -> None:
        """The label names the task run, else the flow run, else the logger."""
        assert run_label(self._record(task_run_name="t-1", flow_run_name="f-1")) == "Task run 't-1'"
        assert run_label(self._record(flow_run_name="f-1", task_run_name=None)) == "Flow run 'f-1'"
        assert run_label(self._record()) == "taskyard.runs"

    def test_format_leaves_the_record_alone(self) -> None:
        """Formatting adds the label to the line, not to the record or its message."""
        record = self._record(flow_run_name="f-1")
        line = RunFormatter(DEFAULT_LOG_FORMAT).format(record)
        assert LINE.match(line) and line.endswith("| INFO    | Flow run 'f-1' - hello there")
        assert record.getMessage() == "hello there" and not hasattr(record, "run_label")

    def test_a_format_naming_run_fields_works_for_any_record(self) -> None:
        """Run fields missing from a record format as None instead of failing."""
        line = RunFormatter("%(task_run_name)s: %(message)s").format(self._record())
        assert line == "None: hello there"

    def test_handler_writes_to_the_current_stderr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The handler looks sys.stderr up at each record (a live display may have replaced it)."""
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        replaced = io.StringIO()
        monkeypatch.setattr(sys, "stderr", replaced)
        handler.emit(self._record())
        assert replaced.getvalue() == "hello there\n"
