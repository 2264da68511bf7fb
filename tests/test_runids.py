"""A lane's run ids: one random base stepped, distinct call by call, and stored as the two numbers."""

from __future__ import annotations

import re
from array import array

from taskyard.runids import ID_STEP, lane_base, stepped_id, stepped_ids
from taskyard.store.codec import TASK_FIELDS, decode_chunk, encode_chunk, float_column


def test_a_lanes_ids_and_names_are_distinct() -> None:
    """Every id of a lane is 32 hex digits and its own; so are the first 8 digits default run names show."""
    for base in (lane_base(), 0, (1 << 128) - 1, (1 << 128) - 50_000 * ID_STEP % (1 << 128)):
        ids = stepped_ids(base, 0, 100_000)
        assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids[:1000])
        assert len(set(ids)) == len({i[:8] for i in ids}) == 100_000


def test_one_id_is_the_same_as_in_the_list() -> None:
    base = lane_base()
    assert stepped_ids(base, 7, 3) == [stepped_id(base, 7), stepped_id(base, 8), stepped_id(base, 9)]
    assert lane_base() != base


def test_a_chunk_stores_stepped_ids_and_floats_as_numbers() -> None:
    """A chunk column of stepped ids is its base and first index; one of floats, their bytes; both read back whole."""
    base, starts = lane_base(), array("d", [1.5, 2.25, 1e9 + 0.125])
    columns: list[object] = [("=", None)] * len(TASK_FIELDS)
    columns[TASK_FIELDS.index("id")] = ("s", (base, 4))
    columns[TASK_FIELDS.index("start_time")] = float_column(starts)
    columns[TASK_FIELDS.index("state_name")] = ("=", "Completed")
    columns[TASK_FIELDS.index("state_type")] = None
    runs = [dict(zip(TASK_FIELDS, run, strict=True)) for run in decode_chunk(encode_chunk(3, columns, squeezed=True))]
    assert [r["id"] for r in runs] == stepped_ids(base, 4, 3)
    assert [r["start_time"] for r in runs] == [1.5, 2.25, 1e9 + 0.125]
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
