"""Run records: what the store knows about a flow run and its task runs, as pydantic models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskyard.states import State

__all__ = ("FlowRun", "TaskRun")


class TaskRun(BaseModel):
    """One recorded task run.

    Attributes:
        id: The task run id.
        name: Its name (``<task name>-<short id>`` unless set).
        task_name: The name of its task.
        map_index: Its position in a ``map`` (-1 for a run that was not mapped).
        state: Its final state (Pending if the flow run ended without it).
            ``state.result()`` loads a persisted result; an unpersisted one
            raises MissingResultError.
        tags: Its tags, sorted.
        run_count: How many attempts it made.
        start_time: When its first attempt started (None if it never started).
        end_time: When it reached its final state.
        result_location: Where its result was persisted, if it was.
        flow_run_id: The flow run it belongs to.
        submitted_time: When the flow handed it to the runner.
        state_history: The states it passed through before the final one
            (Pending, Running, Retrying…), oldest first.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    name: str
    task_name: str
    map_index: int = -1
    state: State[Any]
    tags: list[str] = Field(default_factory=list)
    run_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    result_location: str | None = None
    flow_run_id: str = ""
    submitted_time: datetime | None = None
    state_history: list[State[Any]] = Field(default_factory=list, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds from its start to its end, if it started."""
        if self.start_time is None or self.end_time is None:
            return None
        return max(0.0, (self.end_time - self.start_time).total_seconds())


class FlowRun(BaseModel):
    """One recorded flow run.

    Attributes:
        id: The flow run id (``taskyard runs`` also takes a unique prefix).
        name: Its name.
        flow_name: The name of its flow.
        state: Its current state: Scheduled, Pending, Running, Cancelling or
            a final one. A run whose process died reads as Crashed.
        parameters: Its parameters as recorded (JSON-safe; a value JSON
            cannot hold is its short repr).
        tags: Its tags, sorted.
        task_runner: The name of the runner it used.
        parent_task_run_id: The task run that started it (a flow called, or
            started with ``start_flow_run``, inside a task).
        parent_flow_run_id: The flow run it is a subflow of, or that started it.
        start_time: When it started running.
        end_time: When it ended.
        task_runs: Its task runs, in submission order (empty in
            ``list_flow_runs`` results; see ``task_counts``).
        task_counts: How many of its task runs ended in each state name.
        state_history: Its states, oldest first (the last is ``state``).
        created: When it was recorded first.
        scheduled_start_time: When it was scheduled to start, if it was.
        deployment: The served deployment it is a run of
            (``"flow/deployment"``), if any.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    name: str
    flow_name: str
    state: State[Any]
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    task_runner: str | None = None
    parent_task_run_id: str | None = None
    parent_flow_run_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    task_runs: list[TaskRun] = Field(default_factory=list, repr=False)
    task_counts: dict[str, int] = Field(default_factory=dict)
    state_history: list[State[Any]] = Field(default_factory=list, repr=False)
    created: datetime | None = None
    scheduled_start_time: datetime | None = None
    deployment: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds it ran (until now, if it still runs); None before it starts."""
        if self.start_time is None:
            return None
        end = self.end_time or datetime.now(self.start_time.tzinfo)
        return max(0.0, (end - self.start_time).total_seconds())
