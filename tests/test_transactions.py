"""Transactions: rollback hooks undo completed runs when a later run fails; commit hooks run on success."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, task
from taskyard.transactions import Transaction, get_transaction, transaction


class StepFailed(Exception):
    """A deliberate failure in a pipeline step."""


@task
def write_file(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


@write_file.on_rollback
def _remove_file(txn: Transaction) -> None:
    os.unlink(txn.read())


@write_file.on_commit
def _mark_committed(txn: Transaction) -> None:
    Path(txn.read() + ".committed").write_text("yes")


@task
def fail_step(message: str) -> None:
    raise StepFailed(message)


@task
def ok_step() -> str:
    return "ok"


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class TestRollback:
    @pytest.mark.parametrize("runner", ["sequential", "threads", "processes"])
    def test_failed_submitted_run_undoes_completed_ones(self, runner: str, tmp_path: Path) -> None:
        """A run failing on the runner's worker rolls back the files earlier runs wrote, on every runner."""

        @flow(task_runner=runner)
        def pipeline() -> bool:
            with transaction() as txn:
                first = write_file.submit(str(tmp_path / "a.txt"), "a")
                second = write_file.submit(str(tmp_path / "b.txt"), "b", wait_for=[first])
                fail_step.submit("no", wait_for=[second])
            return txn.is_rolled_back()

        assert pipeline() is True
        assert _files(tmp_path) == []

    def test_rollback_hooks_run_newest_first(self, tmp_path: Path) -> None:
        """Rollback hooks of the completed runs are called in reverse order of completion."""
        order: list[str] = []
        step = ok_step.with_options(on_rollback=[lambda txn: order.append(txn.task_run.name)])

        @flow
        def pipeline() -> None:
            with transaction():
                step.with_options(task_run_name="one")()
                step.with_options(task_run_name="two")()
                fail_step("stop")

        with pytest.raises(StepFailed):
            pipeline()
        assert order == ["two", "one"]

    def test_exception_in_the_block_rolls_back(self, tmp_path: Path) -> None:
        """An exception raised in the block rolls back and goes on to the caller."""
        with pytest.raises(RuntimeError, match="checks failed"), transaction() as txn:
            write_file(str(tmp_path / "a.txt"), "a")
            raise RuntimeError("checks failed")
        assert txn.is_rolled_back() and _files(tmp_path) == []

    def test_explicit_rollback(self, tmp_path: Path) -> None:
        """txn.rollback() in the block undoes what ran so far; nothing is committed at the end."""
        with transaction() as txn:
            write_file(str(tmp_path / "a.txt"), "a")
            assert txn.rollback() is True
        assert txn.is_rolled_back() and _files(tmp_path) == []
        assert txn.rollback() is False

    def test_runs_inside_a_task_are_not_the_blocks(self, tmp_path: Path) -> None:
        """A task called inside another task's run belongs to that run: its hooks are not the block's."""

        @task
        def outer(path: str) -> str:
            return write_file(path, "inner")

        @flow
        def pipeline() -> None:
            with transaction():
                outer(str(tmp_path / "a.txt"))
                fail_step.submit("x")

        pipeline()
        assert _files(tmp_path) == ["a.txt"]


class TestCommit:
    def test_commit_hooks_run_when_the_block_ends_well(self, tmp_path: Path) -> None:
        """Commit hooks run once every run in the block completed (mapped runs included)."""

        @flow(task_runner="processes")
        def pipeline() -> bool:
            with transaction(key="load") as txn:
                write_file.map([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], "x")
            return txn.is_committed()

        assert pipeline() is True
        assert _files(tmp_path) == ["a.txt", "a.txt.committed", "b.txt", "b.txt.committed"]

    def test_values_are_shared_with_hooks(self, tmp_path: Path) -> None:
        """txn.set in the block is read by a hook with txn.get; an unknown name is a KeyError."""
        seen: list[Any] = []
        step = ok_step.with_options(on_commit=[lambda txn: seen.append((txn.get("batch"), txn.get("x", 0)))])
        with transaction() as txn:
            assert get_transaction() is txn
            txn.set("batch", 7)
            step()
        assert seen == [(7, 0)]
        assert get_transaction() is None
        with pytest.raises(KeyError, match="'missing'"):
            txn.get("missing")

    def test_nested_block_commits_with_the_outer_one(self, tmp_path: Path) -> None:
        """A nested block's runs are committed by the outermost block, and rolled back with it."""

        @flow
        def pipeline() -> None:
            with transaction():
                with transaction() as inner:
                    write_file(str(tmp_path / "a.txt"), "a")
                assert inner.is_committed()
                assert _files(tmp_path) == ["a.txt"]  # not committed yet: no marker
                fail_step("outer fails")

        with pytest.raises(StepFailed):
            pipeline()
        assert _files(tmp_path) == []

    def test_a_raising_hook_does_not_stop_the_others(self, tmp_path: Path) -> None:
        """A hook that raises is logged; the other hooks still run."""
        ran: list[str] = []

        def broken(txn: Transaction) -> None:
            raise RuntimeError("hook bug")

        step = ok_step.with_options(on_commit=[broken, lambda txn: ran.append("second")])
        with transaction():
            step()
        assert ran == ["second"]


_counter = {"calls": 0}


@task(cache_key_fn=lambda ctx, params: f"txn-cache-{params['key']}")
def cached_value(key: str, path: str) -> int:
    with open(path, "a") as fh:
        fh.write("x")
    return len(Path(path).read_text())


class TestCacheVisibility:
    def test_cache_records_appear_on_commit_only(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A cache record written in a rolled-back block is never served; one from a committed block is."""
        monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
        calls = str(tmp_path / "calls")

        @flow
        def rolled_back() -> None:
            with transaction():
                cached_value("a", calls)
                fail_step("undo")

        @flow
        def committed() -> int:
            with transaction():
                value: int = cached_value("a", calls)
                inside: int = cached_value("a", calls)  # still staged: not visible inside the block
            return value + inside

        @flow
        def later() -> int:
            return int(cached_value("a", calls))

        with pytest.raises(StepFailed):
            rolled_back()
        assert committed() == 2 + 3  # ran again: the rolled-back record was not served
        assert later() == 3  # served from the record the committed block published
        assert len(Path(calls).read_text()) == 3
