"""Schedules, deployments and the flow server (in a thread of this process), and the worker command's errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from taskyard import flow
from taskyard.background import Cron, Interval
from taskyard.background.serving import FlowServer
from taskyard.cli.main import cli
from taskyard.exceptions import ParameterValidationError, RunNotFound
from taskyard.runs import list_flow_runs, read_flow_run, start_flow_run, wait_for_flow_run

STARTS: list[float] = []


@flow
def greet(name: str, punctuation: str = "!") -> str:
    STARTS.append(time.time())
    return f"hello {name}{punctuation}"


class Servers:
    """Flow servers a test starts in threads; each is stopped and joined when the test ends."""

    def __init__(self) -> None:
        self.started: list[tuple[FlowServer, threading.Thread]] = []

    def start(self, server: FlowServer) -> FlowServer:
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self.started.append((server, thread))
        return server


@pytest.fixture
def serving() -> Iterator[Servers]:
    STARTS.clear()
    servers = Servers()
    try:
        yield servers
    finally:
        for server, thread in servers.started:
            server.stop()
            thread.join(30)
            assert not thread.is_alive()


class TestSchedules:
    def test_interval_slots_sit_on_a_grid_strictly_after_the_moment(self) -> None:
        """Interval(60) starts on whole minutes (from the Unix epoch); the next slot is always later than now."""
        every_minute = Interval(60)
        assert every_minute.next_after(120.0) == 180.0 and every_minute.next_after(121.5) == 180.0
        anchored = Interval(timedelta(seconds=10), anchor=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC))
        base = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp()
        assert anchored.next_after(base) == base + 10 and anchored.describe() == "every 10 s"

    def test_cron_gives_the_next_matching_time(self) -> None:
        """A cron expression (read by cronsim) gives its next time in the zone asked for."""
        moment = datetime(2026, 3, 4, 10, 17, tzinfo=UTC).timestamp()
        assert Cron("*/15 * * * *", timezone="UTC").next_after(moment) == datetime(2026, 3, 4, 10, 30, tzinfo=UTC).timestamp()
        assert Cron("0 4 * * sun", timezone="UTC").next_after(moment) == datetime(2026, 3, 8, 4, tzinfo=UTC).timestamp()

    def test_bad_schedules_fail_when_the_deployment_is_made(self) -> None:
        """A bad interval, a bad cron, an unknown zone, or both kinds at once fail at to_deployment."""
        with pytest.raises(ValueError, match="positive"):
            greet.to_deployment("d", interval=0, parameters={"name": "x"})
        with pytest.raises(ValueError, match="not a valid cron"):
            greet.to_deployment("d", cron="every day", parameters={"name": "x"})
        with pytest.raises(ValueError, match="time zone"):
            Cron("* * * * *", timezone="Mars/Olympus")
        with pytest.raises(ValueError, match="not both"):
            greet.to_deployment("d", interval=5, cron="* * * * *", parameters={"name": "x"})


class TestDeployments:
    def test_a_deployment_names_its_flow_and_schedules(self) -> None:
        """to_deployment gives "<flow>/<name>", its schedules and its default parameters."""
        d = greet.to_deployment("hourly", interval=[3600, 7200], parameters={"name": "x"}, tags=["b", "a"])
        assert d.full_name == "greet/hourly" and d.tags == ["a", "b"] and d.parameters == {"name": "x"}
        assert [s.describe() for s in d.schedules] == ["every 3600 s", "every 7200 s"]
        assert greet.to_deployment().full_name == "greet/greet"

    def test_parameters_that_cannot_make_a_scheduled_run_fail_early(self) -> None:
        """An unknown parameter, a missing one on a schedule, or a bad value fail when the deployment is made."""
        with pytest.raises(ValueError, match="no parameter 'nme'"):
            greet.to_deployment("d", parameters={"nme": "x"})
        with pytest.raises(ValueError, match="runs on a schedule"):
            greet.to_deployment("d", interval=60)
        with pytest.raises(ParameterValidationError):
            greet.to_deployment("d", interval=60, parameters={"name": ["not", "a", "str"]})
        greet.to_deployment("by-hand-only")  # no schedule: parameters come with each start
        with pytest.raises(ValueError, match="without '/'"):
            greet.to_deployment("a/b")

    def test_serve_refuses_nothing_and_duplicates(self) -> None:
        """A server needs deployments, each under a name of its own."""
        with pytest.raises(ValueError, match="at least one"):
            FlowServer([])
        d = greet.to_deployment("d")
        with pytest.raises(ValueError, match="two deployments"):
            FlowServer([d, greet.to_deployment("d")])
        with pytest.raises(TypeError, match="to_deployment"):
            FlowServer([greet])  # type: ignore[list-item]


class TestFlowServer:
    def test_a_schedule_starts_runs_recorded_with_the_deployment(self, serving: Servers) -> None:
        """An interval schedule starts runs in the server; each is recorded with its deployment and slot."""
        serving.start(FlowServer([greet.to_deployment("fast", interval=0.25, parameters={"name": "sched"})]))
        deadline = time.monotonic() + 20
        while len(list_flow_runs(deployment="greet/fast", state="COMPLETED")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        runs = list_flow_runs(deployment="greet/fast", state="COMPLETED")
        assert len(runs) >= 3
        assert all(r.parameters == {"name": "sched"} and r.scheduled_start_time for r in runs)

    def test_start_flow_run_by_deployment_name_runs_in_the_server(self, serving: Servers) -> None:
        """A run started by deployment name runs in the server, with the given parameters on top of the deployment's."""
        serving.start(FlowServer([greet.to_deployment("on-demand", parameters={"punctuation": "?"})]))
        _wait_registered("greet/on-demand")
        run_id = start_flow_run("greet/on-demand", {"name": "you"})
        run = wait_for_flow_run(run_id, timeout=20)
        assert run.state.is_completed() and run.deployment == "greet/on-demand"
        assert read_flow_run(run_id).parameters == {"name": "you", "punctuation": "?"}  # on top of its defaults

    def test_a_run_of_a_deployment_nobody_serves_stays_pending(self, serving: Servers) -> None:
        """Started while no server runs, the run is Pending; a server started later runs it."""
        first = FlowServer([greet.to_deployment("later")])
        serving.start(first)
        _wait_registered("greet/later")
        first.stop()
        time.sleep(0.5)
        run_id = start_flow_run("greet/later", {"name": "late"})
        time.sleep(0.5)
        assert read_flow_run(run_id).state.is_pending()
        serving.start(FlowServer([greet.to_deployment("later")]))
        assert wait_for_flow_run(run_id, timeout=20).state.is_completed()

    def test_slots_missed_while_nothing_served_are_not_replayed(self, serving: Servers) -> None:
        """Stopped for ~8 slots and served again, a deployment starts at the next slot, with no burst of missed runs."""
        first = serving.start(FlowServer([greet.to_deployment("gap", interval=0.2, parameters={"name": "g"})]))
        _wait_registered("greet/gap")
        time.sleep(0.5)
        first.stop()
        time.sleep(0.3)  # its last run, if any, has ended
        before = len(list_flow_runs(deployment="greet/gap"))
        time.sleep(1.6)  # about 8 slots pass unserved
        again = serving.start(FlowServer([greet.to_deployment("gap", interval=0.2, parameters={"name": "g"})]))
        time.sleep(0.3)
        again.stop()
        time.sleep(0.3)
        assert len(list_flow_runs(deployment="greet/gap")) - before <= 2

    def test_a_paused_deployment_starts_nothing_on_schedule(self, serving: Servers) -> None:
        """paused=True: the schedule starts no run."""
        serving.start(FlowServer([greet.to_deployment("paused", interval=0.1, parameters={"name": "p"}, paused=True)]))
        time.sleep(1.0)
        assert list_flow_runs(deployment="greet/paused") == [] and STARTS == []

    def test_an_unknown_deployment_or_bad_parameters_fail_at_start(self, serving: Servers) -> None:
        """start_flow_run names an unknown deployment, and validates parameters against the flow."""
        with pytest.raises(RunNotFound, match="no deployment 'greet/nope'"):
            start_flow_run("greet/nope")
        serving.start(FlowServer([greet.to_deployment("checked")]))
        _wait_registered("greet/checked")
        with pytest.raises(ParameterValidationError):
            start_flow_run("greet/checked", {"name": ["a", "list"]})


def _wait_registered(name: str) -> None:
    """Wait until a server has registered the deployment ``name``."""
    from taskyard.settings import current_settings
    from taskyard.store.db import connect

    conn = connect(current_settings().home)
    deadline = time.monotonic() + 20
    try:
        while conn.execute("SELECT 1 FROM deployments WHERE name = ? AND pid IS NOT NULL", (name,)).fetchone() is None:
            assert time.monotonic() < deadline, f"no server registered {name}"
            time.sleep(0.02)
    finally:
        conn.close()


class TestWorkerCommand:
    @pytest.mark.parametrize(
        ("refs", "message"),
        [
            (["nosuchmodule_xyz:task"], "nosuchmodule_xyz"),
            (["no-colon"], "no-colon"),
            (["tasks_for_cli.py:missing"], "missing"),
            (["tasks_for_cli.py:not_a_task"], "not a @task"),
        ],
    )
    def test_a_mistake_is_one_line_without_traceback(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refs: list[str], message: str) -> None:
        """`taskyard worker` with a bad reference prints one line and exits 2."""
        (tmp_path / "tasks_for_cli.py").write_text("from taskyard import task\n\nnot_a_task = 3\n\n@task\ndef t():\n    pass\n")
        monkeypatch.chdir(tmp_path)
        done = CliRunner().invoke(cli, ["worker", *refs])
        assert done.exit_code == 2, done.output
        assert message in done.stderr and "Traceback" not in done.output and len(done.stderr.strip().splitlines()) == 1

    def test_an_unknown_runner_is_one_line(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`taskyard worker --runner NAME` with an unknown runner prints the known ones, exit 2."""
        (tmp_path / "tasks_for_cli.py").write_text("from taskyard import task\n\n@task\ndef t():\n    pass\n")
        monkeypatch.chdir(tmp_path)
        done = CliRunner().invoke(cli, ["worker", "tasks_for_cli.py:t", "--runner", "nosuch"])
        assert done.exit_code == 2 and "nosuch" in done.stderr and "threads" in done.stderr
