"""The embedded run store: schema, chunks, and what a flow run records."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from taskyard import flow, get_run_context, tags, task
from taskyard.futures import wait as wait_all
from taskyard.runs import list_flow_runs, read_flow_run
from taskyard.store.codec import TASK_FIELDS, decode_chunk, encode_chunk, json_safe
from taskyard.pids import pid_alive
from taskyard.store.db import connect, database_path
from taskyard.store.schema import LATEST, migrate


@task
def double(x: int) -> int:
    return 2 * x


@task(retries=1)
def flaky_once(marker: str) -> str:
    if get_run_context().task_run.run_count == 1:  # type: ignore[union-attr]
        raise ValueError("first attempt fails")
    return marker


@flow
def map_flow(n: int) -> list[int]:
    return double.map(range(n)).result()


class TestSchema:
    def test_new_database_is_at_the_latest_version_in_wal_mode(self, tmp_path: Path) -> None:
        """Opening a store creates it, migrated to the latest version, in WAL mode."""
        conn = connect(tmp_path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert database_path(tmp_path).is_file()

    def test_migration_from_the_first_version_keeps_runs(self) -> None:
        """A version-1 database is migrated on open, and its flow runs still read back."""
        home = Path(os.environ["TASKYARD_HOME"])
        path = database_path(home)
        old = sqlite3.connect(path, isolation_level=None)
        assert migrate(old, target=1) == 1
        now = time.time()
        old.execute(
            "INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, state_time, created, start_time, end_time) "
            "VALUES ('a' || hex(randomblob(15)), 'old-run', 'old_flow', 'COMPLETED', 'Completed', ?, ?, ?, ?)",
            (now, now, now, now),
        )
        assert old.execute("SELECT count(*) FROM sqlite_master WHERE name = 'logs'").fetchone()[0] == 0
        old.close()
        conn = connect(home)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'logs'").fetchone()[0] == 1
        for table in ("deferred_runs", "deferred_waits", "deployments"):  # version 3
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0] == 1
        (run,) = list_flow_runs()
        assert (run.name, run.flow_name, run.state.name) == ("old-run", "old_flow", "Completed")
        assert run.deployment is None  # a run from before deployments existed


class TestCodec:
    def test_chunk_round_trip(self) -> None:
        """A chunk gives back its task runs, with squeezed and joined columns expanded."""
        rows = [
            ("id1", "t-1", "t", 0, ("a",), 1.0, "COMPLETED", "Completed", None, 1, 1.5, 2.0, None, None),
            ("id2", "t-2", "t", 1, ("a",), 1.0, "FAILED", "Failed", "boom", 2, 1.6, 2.1, "/r", (("RUNNING", "Retrying", "m", 1.7),)),
        ]
        columns: list[list[Any] | None] = [list(c) for c in zip(*rows, strict=True)]
        assert decode_chunk(encode_chunk(2, columns)) == rows
        columns[TASK_FIELDS.index("state_type")] = None  # implied by the state names
        assert decode_chunk(encode_chunk(2, columns)) == rows

    def test_derived_columns_expand_to_map_indices_and_default_names(self) -> None:
        """Ids concatenated, map indices counting up and default names (prefix + id[:8]) are stored as one value each."""
        ids = ["0123456789abcdef" * 2, "fedcba9876543210" * 2, "00112233445566778899aabbccddeeff"]
        columns: list[Any] = [
            ("w", "".join(ids)), ("n", "noop-"), ("=", "noop"), ("r", 7), ("=", ()), ("=", 1.0), None, ("=", "Completed"),
            ("=", None), ("=", 1), [1.0, 2.0, 3.0], [1.5, 2.5, 3.5], ("=", None), ("=", None),
        ]  # fmt: skip
        rows = decode_chunk(encode_chunk(3, columns))
        assert [r[:4] for r in rows] == [
            (ids[0], "noop-01234567", "noop", 7), (ids[1], "noop-fedcba98", "noop", 8), (ids[2], "noop-00112233", "noop", 9),
        ]  # fmt: skip
        assert [(r[6], r[7], r[10], r[11]) for r in rows] == [("COMPLETED", "Completed", 1.0, 1.5), ("COMPLETED", "Completed", 2.0, 2.5), ("COMPLETED", "Completed", 3.0, 3.5)]

    def test_chunks_never_unpickle_objects(self) -> None:
        """A chunk holding anything but plain data is refused, not loaded."""
        import pickle

        evil = pickle.dumps((1, [[os.getcwd]]), protocol=5)
        with pytest.raises(pickle.UnpicklingError, match="plain data"):
            decode_chunk(evil)

    def test_json_safe_parameters(self) -> None:
        """JSON-able values stay; anything else becomes a short repr."""
        value = {"n": 1, "xs": [1, "a", None], "obj": object(), "big": list(range(1000))}
        safe = json_safe(value)
        assert safe["n"] == 1 and safe["xs"] == [1, "a", None]
        assert safe["obj"].startswith("<object object at")
        assert isinstance(safe["big"], str) and len(safe["big"]) <= 200


class TestRecording:
    def test_every_task_run_of_a_large_map_is_recorded_when_the_flow_returns(self) -> None:
        """A 1,500-task map on threads: every task run is in the store, final, in map order."""
        state = map_flow(1500, return_state=True)
        assert state.is_completed()
        (run,) = list_flow_runs()
        record = read_flow_run(run.id)
        assert record.state.name == "Completed" and record.task_runner == "threads"
        assert record.task_counts == {"Completed": 1500}
        assert [t.map_index for t in record.task_runs] == list(range(1500))
        assert all(t.state.is_completed() and t.run_count == 1 for t in record.task_runs)
        assert all(t.start_time is not None and t.end_time is not None and t.start_time <= t.end_time for t in record.task_runs)
        assert record.parameters == {"n": 1500}
        assert [s.name for s in record.state_history] == ["Running", "Completed"]

    def test_map_runs_are_recorded_with_their_own_ids_names_and_indices(self) -> None:
        """The runs of maps, default-named or named by the task, read back with the ids, names and indices they ran with."""

        @task(task_run_name="sq-{x}")
        def named(x: int) -> int:
            return x * x

        @flow
        def two_maps() -> list[tuple[str, str, int]]:
            plain, squares = double.map(range(100)), named.map(range(100))
            wait_all([*plain, *squares])
            return [(f.task_run_id, f.task_run_name, i) for fs in (plain, squares) for i, f in enumerate(fs)]

        ran = two_maps()
        record = read_flow_run(list_flow_runs()[0].id)
        recorded = sorted((t.id, t.name, t.map_index) for t in record.task_runs)
        assert recorded == sorted(ran)
        assert {t.name for t in record.task_runs if t.task_name == "named"} == {f"sq-{i}" for i in range(100)}
        assert all(t.name == f"double-{t.id[:8]}" for t in record.task_runs if t.task_name == "double")

    def test_recorded_times_are_the_states_own(self) -> None:
        """Start and end times read back equal each run's state, whether the engine's fast path made it or not."""

        @task
        def fails_on_3(x: int) -> int:
            if x == 3:
                raise ValueError("three")
            return x

        @flow
        def timed() -> dict[str, tuple[Any, ...]]:
            futures = [*fails_on_3.map(range(6)), flaky_once.submit("ok"), double.submit(1)]
            return {f.task_run_id: (f.state.name, f.state.start_time, f.state.timestamp) for f in wait_all(futures).done}

        states = timed()
        record = read_flow_run(list_flow_runs()[0].id)
        assert len(record.task_runs) == len(states) == 8
        for run in record.task_runs:
            assert (run.state.name, run.start_time, run.end_time) == states[run.id]
        assert record.task_counts == {"Completed": 7, "Failed": 1}

    def test_process_runner_task_runs_are_recorded(self) -> None:
        """Task runs executed in worker processes are recorded from the states they send back."""
        state = map_flow.with_options(task_runner="processes")(6, return_state=True)
        assert state.result() == [0, 2, 4, 6, 8, 10]
        record = read_flow_run(list_flow_runs()[0].id)
        assert record.task_runner == "processes"
        assert sorted(t.map_index for t in record.task_runs) == list(range(6))
        assert all(t.state.is_completed() for t in record.task_runs)

    def test_retries_tags_inline_calls_and_failures(self) -> None:
        """A retried run keeps its Retrying state and run count; tags, inline calls and failures are recorded."""

        @task
        def boom() -> None:
            raise RuntimeError("no")

        @flow
        def mixed() -> str:
            with tags("nightly"):
                flaky_once.submit("ok").wait()
            double(4)  # called inline in the flow body
            boom.submit()
            return "done"

        state = mixed(return_state=True)
        assert state.is_failed() is False
        record = read_flow_run(list_flow_runs()[0].id)
        by_task = {t.task_name: t for t in record.task_runs}
        flaky = by_task["flaky_once"]
        assert flaky.run_count == 2 and flaky.tags == ["nightly"] and flaky.state.is_completed()
        assert [s.name for s in flaky.state_history] == ["Pending", "Running", "Retrying"]
        assert by_task["double"].state.is_completed() and by_task["double"].map_index == -1
        assert by_task["boom"].state.name == "Failed" and "RuntimeError: no" in (by_task["boom"].state.message or "")
        assert record.task_counts == {"Completed": 2, "Failed": 1}

    def test_subflows_and_flows_called_in_tasks_name_their_parents(self) -> None:
        """A subflow names its parent flow run; a flow called inside a task names that task run too."""

        @flow
        def inner() -> int:
            return 1

        @task
        def calls_a_flow() -> int:
            return inner()

        @flow
        def outer() -> int:
            return inner() + calls_a_flow()

        assert outer() == 2
        runs = {r.name: r for r in list_flow_runs()}
        (outer_run,) = [r for r in runs.values() if r.flow_name == "outer"]
        inners = [r for r in runs.values() if r.flow_name == "inner"]
        assert len(inners) == 2 and all(r.parent_flow_run_id == outer_run.id for r in inners)
        (task_run,) = [t for t in read_flow_run(outer_run.id).task_runs if t.task_name == "calls_a_flow"]
        assert sorted(str(r.parent_task_run_id) for r in inners) == sorted(["None", task_run.id])

    def test_unserialisable_parameters_are_recorded_as_a_short_repr(self) -> None:
        """A parameter JSON cannot hold is recorded as its repr."""

        class Thing:
            def __repr__(self) -> str:
                return "Thing()"

        @flow(validate_parameters=False)
        def takes(thing: Any, n: int = 2) -> int:
            return n

        takes(Thing())
        assert list_flow_runs()[0].parameters == {"thing": "Thing()"}

    def test_taskyard_record_0_turns_recording_off_per_flow_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKYARD_RECORD=0 is read when each flow run starts."""
        monkeypatch.setenv("TASKYARD_RECORD", "0")
        map_flow(3)
        assert list_flow_runs() == []
        monkeypatch.setenv("TASKYARD_RECORD", "1")
        map_flow(3)
        assert len(list_flow_runs()) == 1


_SCRIPT = """
import os, sys, time
from taskyard import flow, task

@task
def inc(x):
    {body}
    return x + 1

@flow(name="worker_{index}")
def work(n: int):
    return inc.map(range(n)).result()

if __name__ == "__main__":
    start = float(sys.argv[1])
    while time.time() < start:
        time.sleep(0.005)
    work({n})
"""


def _columns(blob: bytes) -> list[Any]:
    """The columns of a chunk as stored (squeezed)."""
    import pickle

    return pickle.loads(blob)[1]  # type: ignore[no-any-return]


def _script(tmp_path: Path, index: int, n: int, body: str = "pass") -> Path:
    path = tmp_path / f"worker_{index}.py"
    path.write_text(textwrap.dedent(_SCRIPT.format(index=index, n=n, body=body)))
    return path


class TestWriterPasses:
    def test_a_pass_takes_the_finished_front_of_a_batch_and_resumes_there(self) -> None:
        """Each pass writes the runs finished since the last one, from where it stopped; finishing writes the rest."""
        from taskyard.context import TaskRunInfo
        from taskyard.futures import TaskFuture
        from taskyard.states import Completed
        from taskyard.store.recorder import _Map, _split

        infos = [TaskRunInfo(f"id-{i}", f"t-{i}", "t", map_index=i) for i in range(4)]
        futures: list[TaskFuture[Any]] = [TaskFuture(info.id, info.name) for info in infos]
        futures[0]._state = Completed(data=0)
        futures[2]._state = Completed(data=2)  # out of order: waits for run 1
        ready, rest = _split([(infos, futures, 1.0, 0, _Map(None, None))], finishing=False)
        assert [[i.id for i in r[0]] for r in ready] == [["id-0"]]
        assert [r[3] for r in rest] == [1]
        futures[1]._state = Completed(data=1)
        ready, rest = _split(rest, finishing=False)
        assert [[i.id for i in r[0]] for r in ready] == [["id-1", "id-2"]] and [r[3] for r in rest] == [3]
        assert ready[0][3] == 1  # a map's runs from index 1 on
        ready, rest = _split(rest, finishing=True)
        assert [[i.id for i in r[0]] for r in ready] == [["id-3"]] and rest == []
        assert not ready[0][1][0].is_final()  # never ended: written as it is

    def test_a_pass_over_a_long_batch_stops_at_its_first_unfinished_run(self) -> None:
        """Past the first window of a batch, a pass still stops at the first run not final and resumes there."""
        from taskyard.context import TaskRunInfo
        from taskyard.futures import TaskFuture
        from taskyard.states import Completed
        from taskyard.store.recorder import _WINDOW, _Map, _split

        size = 2 * _WINDOW + 10
        infos = [TaskRunInfo(f"id-{i}", f"t-{i}", "t", map_index=i) for i in range(size)]
        futures: list[TaskFuture[Any]] = [TaskFuture(info.id, info.name) for info in infos]
        for future in futures[: _WINDOW + 5] + futures[_WINDOW + 6 :]:
            future._state = Completed(data=0)
        ready, rest = _split([(infos, futures, 1.0, 0, _Map(None, None))], finishing=False)
        assert [len(r[0]) for r in ready] == [_WINDOW + 5] and [r[3] for r in rest] == [_WINDOW + 5]
        assert all(state is future._state for state, future in zip(ready[0][1], futures, strict=False))
        futures[_WINDOW + 5]._state = Completed(data=0)
        ready, rest = _split(rest, finishing=False)
        assert [len(r[0]) for r in ready] == [size - _WINDOW - 5] and rest == []

    def test_a_map_written_in_two_passes_keeps_each_runs_id_and_index(self, tmp_path: Path) -> None:
        """A map's fast-path runs written by a pass and then by the finishing one read back with their own ids and indices."""
        from taskyard.context import TaskRunInfo
        from taskyard.futures import TaskFuture
        from taskyard.states import Completed
        from taskyard.store.recorder import Recorder, _Map, _split

        size = 250  # two batches of at least _PLAIN_FROM runs
        ids = os.urandom(16 * size).hex()
        infos = [TaskRunInfo(ids[32 * i : 32 * i + 32], f"t-{ids[32 * i : 32 * i + 8]}", "t", map_index=i) for i in range(size)]
        futures: list[TaskFuture[Any]] = [TaskFuture(info.id, info.name) for info in infos]

        def finish(i: int) -> None:  # as the engine's fast path leaves a run
            info = infos[i]
            info.started, info.ended, info.state_name, info.run_count = 10.0 + i, 11.0 + i, "Completed", 1
            info.final = futures[i]._state = Completed(data=i)

        for i in range(100):
            finish(i)
        recorder = Recorder(tmp_path)
        held = [(list(infos), futures, 1.0, 0, _Map("t-", ids))]
        ready, rest = _split(held, finishing=False)
        for i in range(100, size):
            finish(i)
        more, _ = _split(rest, finishing=True)
        blobs = [blob for batch in ready + more for _, blob in recorder._encode_all([batch], {})]
        assert len(blobs) == 2 and all(_columns(blob)[0][0] == "w" for blob in blobs)  # the ids were not read run by run
        rows = [row for blob in blobs for row in decode_chunk(blob)]
        assert [r[:4] for r in rows] == [(info.id, info.name, "t", i) for i, info in enumerate(infos)]
        assert [(r[7], r[10], r[11]) for r in rows] == [("Completed", 10.0 + i, 11.0 + i) for i in range(size)]

    def test_a_pass_keeps_no_written_run_of_a_map_alive(self) -> None:
        """The runs a pass wrote leave the batch it keeps, so a long map's finished runs can be freed."""
        from taskyard.context import TaskRunInfo
        from taskyard.futures import TaskFuture
        from taskyard.states import Completed
        from taskyard.store.recorder import _Map, _split

        infos: list[TaskRunInfo | None] = [TaskRunInfo(f"id-{i}", f"t-{i}", "t", map_index=i) for i in range(5)]
        futures: list[TaskFuture[Any]] = [TaskFuture(f"id-{i}", f"t-{i}") for i in range(5)]
        for future in futures[:3]:
            future._state = Completed(data=0)
        ready, rest = _split([(infos, futures, 1.0, 0, _Map(None, None))], finishing=False)
        assert [i.id for i in ready[0][0]] == ["id-0", "id-1", "id-2"]  # type: ignore[union-attr]
        assert infos[:3] == [None, None, None] and [i.id for i in infos[3:]] == ["id-3", "id-4"]  # type: ignore[union-attr]
        assert rest[0][0] is infos and rest[0][3] == 3


    def test_a_pass_writes_runs_whose_future_class_holds_a_final_state(self) -> None:
        """A runner's own future with its final state installed is written as it finishes; one left on its cluster waits."""
        from taskyard.context import TaskRunInfo
        from taskyard.runners.toolkit import RemoteTaskFuture
        from taskyard.states import Completed
        from taskyard.store.recorder import _Map, _split

        def fetch(future: RemoteTaskFuture) -> Any:
            raise AssertionError("a pass must not fetch a state left on the cluster")

        infos: list[TaskRunInfo | None] = [TaskRunInfo(f"id-{i}", f"t-{i}", "t", map_index=i) for i in range(3)]
        futures = [RemoteTaskFuture(f"id-{i}", f"t-{i}", fetch) for i in range(3)]
        for future in futures:
            future.mark_finished()  # finished on the cluster: not final here yet
        futures[0].install(Completed(data=0))
        futures[2].install(Completed(data=2))
        ready, rest = _split([(infos, futures, 1.0, 0, _Map(None, None))], finishing=False)
        assert [i.id for i in ready[0][0]] == ["id-0"] and ready[0][1] == [futures[0]._state]  # type: ignore[union-attr]
        assert infos[0] is None and [r[3] for r in rest] == [1]  # the written run is let go

    def test_encoding_states_made_elsewhere_keeps_nothing_per_state(self, tmp_path: Path) -> None:
        """Reading the fields of states unpickled from a worker leaves no dict object on each (64 bytes a state, kept)."""
        import gc
        import pickle
        import tracemalloc

        from taskyard.context import TaskRunInfo
        from taskyard.states import Completed
        from taskyard.store.recorder import Recorder

        count = 2000
        wire = pickle.dumps([Completed(data=i) for i in range(count)])
        infos = [TaskRunInfo(f"id-{i}", f"t-{i}", "t", map_index=i) for i in range(count)]
        recorder = Recorder(tmp_path)
        recorder._encode([(infos, pickle.loads(wire), 1.0, 0, None)], {})  # warm: first-use allocations
        states = pickle.loads(wire)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            chunk = recorder._encode([(infos, states, 1.0, 0, None)], {})
            del chunk
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert kept / count < 8, f"{kept / count:.1f} bytes kept per state"


class TestManyProcesses:
    def test_eight_flow_processes_writing_at_once_lose_nothing(self, tmp_path: Path) -> None:
        """8 flow processes started together, each mapping 500 tasks: every run recorded, no lock error."""
        start = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [sys.executable, str(_script(tmp_path, i, 500))] + [str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(8)
        ]
        errors = []
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=240)
            finally:
                proc.kill()
            assert proc.returncode == 0, err
            errors.append(err)
        assert not any("locked" in e for e in errors)
        runs = list_flow_runs()
        assert sorted(r.flow_name for r in runs) == sorted(f"worker_{i}" for i in range(8))
        for run in runs:
            record = read_flow_run(run.id)
            assert record.state.is_completed()
            assert sorted(t.map_index for t in record.task_runs) == list(range(500))
            assert record.task_counts == {"Completed": 500}


class TestCrashes:
    def test_a_sigkilled_flow_process_reads_back_as_crashed(self, tmp_path: Path) -> None:
        """A flow process killed with SIGKILL leaves its run Crashed on the next read, not Running."""
        script = _script(tmp_path, 0, 4, body="time.sleep(60)")
        proc = subprocess.Popen([sys.executable, str(script), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not list_flow_runs() and time.monotonic() < deadline:
                time.sleep(0.1)
            (run,) = list_flow_runs()
            assert run.state.name == "Running"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert not pid_alive(proc.pid)
        record = read_flow_run(run.id)
        assert record.state.is_crashed() and str(proc.pid) in (record.state.message or "")
        assert record.end_time is not None
        assert read_flow_run(run.id).state.is_crashed()  # written once, read again the same

    def test_an_interpreter_exiting_normally_flushes_what_is_queued(self, tmp_path: Path) -> None:
        """Task runs that finished but were not yet written reach the store when the interpreter exits."""
        script = tmp_path / "exits_mid_flow.py"
        script.write_text(
            textwrap.dedent(
                """
                import threading

                import taskyard.store.recorder as recorder

                recorder.TICK_S = 3600.0  # the writer never wakes on its own: only the exit flush writes

                from taskyard import flow, task

                quick_done = threading.Event()


                @task
                def quick(x):
                    return x


                @flow(task_runner="threads")
                def stays_running(n):
                    quick.map(range(n)).result()
                    quick_done.set()
                    threading.Event().wait()  # the flow run never ends


                threading.Thread(target=stays_running, args=(20,), daemon=True).start()
                quick_done.wait(60)
                """
            )
        )
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        (run,) = list_flow_runs()
        record = read_flow_run(run.id)
        assert record.task_counts == {"Completed": 20}
        assert sorted(t.map_index for t in record.task_runs) == list(range(20))
        assert record.state.is_crashed()  # its process is gone and it never ended
