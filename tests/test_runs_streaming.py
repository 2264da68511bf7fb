"""wait_for_flow_run streaming a started run's states and log records into the caller."""

from __future__ import annotations

import logging

import pytest

from taskyard import flow, get_run_logger, task
from taskyard.runs import start_flow_run, wait_for_flow_run


@task
def shout(word: str) -> str:
    get_run_logger().warning("heard %s", word)
    return word


@flow
def echo(word: str) -> str:
    return shout(word)


class TestStreaming:
    def test_states_and_logs_of_a_started_run_reach_the_caller(self, caplog: pytest.LogCaptureFixture) -> None:
        """stream_states logs each state the run enters; stream_logs replays its records here."""
        caplog.set_level(logging.INFO)
        run_id = start_flow_run(echo, {"word": "hello"})
        run = wait_for_flow_run(run_id, timeout=120, stream_states=True, stream_logs=True)
        assert run.state.is_completed()
        states = [r.getMessage() for r in caplog.records if r.name == "taskyard.runs.control"]
        assert any("entered state 'Pending'" in m for m in states)
        assert any("entered state 'Completed'" in m for m in states)
        replayed = [r for r in caplog.records if "heard hello" in r.getMessage()]
        assert len(replayed) == 1 and replayed[0].levelno == logging.WARNING
