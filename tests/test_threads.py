"""The thread runner's queue: a map is one batch whose calls the workers claim."""

from __future__ import annotations

import threading
from typing import Any

from taskyard.futures import TaskFuture
from taskyard.runners.threads import _Batch


class TestBatch:
    def test_threads_claim_every_call_once_and_the_batch_lets_go_of_it(self) -> None:
        """Eight threads claiming from one batch get each call exactly once; a claimed call leaves the batch."""
        size = 20_000
        calls: list[Any] = [object() for _ in range(size)]
        futures = [TaskFuture(f"id-{i}") for i in range(size)]
        batch = _Batch(list(calls), futures)
        claimed: list[list[tuple[Any, TaskFuture[Any]]]] = [[] for _ in range(8)]

        def claim(mine: list[tuple[Any, TaskFuture[Any]]]) -> None:
            while (got := batch.claim()) is not None:
                mine.append(got)

        threads = [threading.Thread(target=claim, args=(mine,)) for mine in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pairs = [pair for mine in claimed for pair in mine]
        assert len(pairs) == size
        assert sorted(int(future.task_run_id[3:]) for _, future in pairs) == list(range(size))
        assert all(call is calls[int(future.task_run_id[3:])] for call, future in pairs)
        assert batch.calls == [None] * size and batch.claim() is None
