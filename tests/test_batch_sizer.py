"""The adaptive batch size: start at one, grow while calls are short, aim for ~0.1 s backend tasks."""

from __future__ import annotations

from taskyard.batching import MAX_BATCH, BatchSizer


def test_it_starts_at_one_and_a_fixed_size_stays() -> None:
    assert BatchSizer().size(1000) == 1
    fixed = BatchSizer(fixed=50)
    fixed.record(50, 0.0001)
    assert (fixed.size(1000), fixed.size(20)) == (50, 20)


def test_calls_of_a_millisecond_grow_eightfold_per_batch() -> None:
    """1 ms calls: 1 → 8 → 64 → 100 (a 0.1 s batch), never more than eight times the last."""
    sizer, sizes = BatchSizer(), []
    for _ in range(4):
        size = sizer.size(100_000)
        sizer.record(size, size * 0.001)
        sizes.append(sizer.size(100_000))
    assert sizes == [8, 64, 100, 100]


def test_calls_of_a_microsecond_reach_their_size_in_one_step() -> None:
    """Calls this short grow at once to what runs in 5 ms (here past the largest batch): no ramp of round trips."""
    sizer = BatchSizer(max_size=MAX_BATCH)
    sizer.record(1, 0.000_001)
    assert sizer.size(1_000_000) == MAX_BATCH
    small = BatchSizer(max_size=1_000_000)
    small.record(1, 0.000_001)
    assert small.size(10_000_000) == 5000


def test_cpu_bound_calls_stay_one_or_two_per_batch() -> None:
    sizer = BatchSizer()
    for _ in range(5):
        sizer.record(sizer.size(40), 0.045 * sizer.size(40))
    assert sizer.size(40) == 2


def test_a_slower_batch_counts_at_once() -> None:
    """Calls that get slower shrink the next batch at once, not over several batches."""
    sizer = BatchSizer()
    sizer.record(1, 0.000_001)
    assert sizer.size(1_000_000) == MAX_BATCH
    sizer.record(MAX_BATCH, 0.01 * MAX_BATCH)
    assert sizer.size(1_000_000) == 10


def test_the_end_of_a_map_is_shared_among_workers() -> None:
    """No batch takes more than a quarter of each worker's share of what is left, unless it would be shorter than min_seconds."""
    sizer = BatchSizer()
    sizer.record(1, 0.000_01)
    assert sizer.size(800, workers=2) == 100
    assert sizer.size(800, workers=2, min_seconds=0.002) == 200
