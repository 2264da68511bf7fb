"""What the flow process keeps of a finished batched map on Dask: its futures and States, not its calls."""

from __future__ import annotations

import gc
import time
from typing import Any

from taskyard import flow, task
from taskyard.engine import TaskCall
from taskyard_dask import DaskTaskRunner, get_dask_client
from taskyard_dask.entries import Entry
from taskyard_dask.starting import DEBUG_LOG_LENGTH

# -- tasks (module level: workers import this module by name) ------------------------------


@task
def plus_one(x: int) -> int:
    return x + 1


@task
def doubled(x: int) -> int:
    return 2 * x


def _settle(check: Any, seconds: float = 20.0) -> Any:
    """``check()`` until it is falsy or ``seconds`` passed (Dask forgets released keys asynchronously)."""
    deadline = time.monotonic() + seconds
    while (found := check()) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.1)
    return found


class TestReleasedBatches:
    def test_a_batch_whose_states_came_back_is_let_go(self, dask_address: str) -> None:
        """The map's States are here, its futures hold no Dask future, the cluster forgot its batches; a later call downstream still gets its upstream's State."""
        kept: list[Any] = []

        @flow(task_runner=DaskTaskRunner(address=dask_address))
        def f() -> tuple[list[int], int]:
            futures = plus_one.map(range(300))
            values = futures.result()
            kept.extend(futures)
            return values, doubled.submit(futures[7]).result()

        values, downstream = f()
        assert values == list(range(1, 301)) and downstream == 16
        assert all(future.native is None and future.state.is_completed() for future in kept)
        from distributed import Client

        with Client(dask_address, set_as_default=False) as client:

            def batches_left() -> list[str]:
                keys = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
                return [k for k in keys if str(k).startswith("plus_one-batch-")]

            assert not _settle(batches_left)

    def test_no_call_of_a_finished_map_stays_in_the_flow_process(self) -> None:
        """With the runner's own LocalCluster (its scheduler runs in the flow process), nothing keeps the map's calls."""

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}))
        def f() -> int:
            futures = plus_one.map(range(2000))
            total = sum(futures.result())
            # The scheduler's and client's developer logs are short (they held every call shipped).
            with get_dask_client() as client:
                assert client.scheduler_comm.recent_message_log.maxlen <= DEBUG_LOG_LENGTH
                streams = client.cluster.scheduler.stream_comms.values()
            assert streams and all(s.recent_message_log.maxlen <= DEBUG_LOG_LENGTH for s in streams)
            # Before: all 2,000 (the scheduler's log of messages to its worker held every batch).
            # The last call shipped may stay referenced from C (seen: one), never a batch's worth.
            left = _settle(lambda: len([o for o in gc.get_objects() if type(o) is TaskCall and o.task is plus_one]) > 5)
            assert not left, "calls of the finished map are still held"
            return total

        import dask
        import distributed  # noqa: F401  # its settings are loaded with it

        before = dask.config.get("distributed.admin.low-level-log-length")
        assert f() == sum(range(1, 2001))
        assert dask.config.get("distributed.admin.low-level-log-length") == before  # set only while starting


class TestEntries:
    def test_an_entry_learns_its_losses_and_keys_on_demand(self) -> None:
        """An entry carries no record until a loss or a new key; its key is made from its run."""
        from taskyard.context import TaskRunInfo

        call = TaskCall(plus_one, {"x": 1}, TaskRunInfo("abc123", "plus_one-abc", "plus_one"))
        entry = Entry(call, None, {}, ())  # type: ignore[arg-type]
        assert (entry.losses, entry.placements, entry.orphaned, entry.marked, entry.keys) == (0, 0, 0, False, 0)
        assert entry.key == "plus_one-abc123" and entry._record is None
        entry.losses += 1
        entry.rekey("p")
        entry.rekey("q")
        assert (entry.losses, entry.keys, entry.key) == (1, 2, "plus_one-abc123-q2")
        assert Entry(call, None, {}, ())._record is None  # type: ignore[arg-type]  # records are not shared

    def test_the_feeder_takes_a_deque_over(self) -> None:
        """A map's queue handed over as a deque is the feeder's own (a million-call map is not copied); a list is copied."""
        from collections import deque

        from taskyard.runners.base import BatchSizer
        from taskyard.runners.toolkit import BatchFeeder

        sent: list[list[int]] = []
        feeder: BatchFeeder[int] = BatchFeeder(lambda batch, sizer: sent.append(batch), lambda: 1)
        queue = deque(range(10))
        feeder.add(queue, BatchSizer(fixed=3))
        assert sent == [[0, 1, 2], [3, 4, 5]] and list(queue) == [6, 7, 8, 9]
        given = list(range(4))
        feeder.add(given, BatchSizer(fixed=3))
        assert given == [0, 1, 2, 3] and feeder.queued() == [6, 7, 8, 9, 0, 1, 2, 3]
