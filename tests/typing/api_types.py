"""Type-checked usage of the public API: mypy --strict must accept this file.

Not collected by pytest (no test_ prefix); tests/test_typing.py runs mypy on it.
"""

from __future__ import annotations

from typing import assert_type

from taskyard import FutureList, State, TaskFuture, flow, task


@task
def render(x: int) -> str:
    return str(x)


@task
async def fetch(x: int) -> bytes:
    return b""


@flow
def pipeline(n: int) -> list[str]:
    futures = render.map(range(n))
    assert_type(futures, FutureList[str])
    assert_type(render.submit(1), TaskFuture[str])
    assert_type(render.submit(1).result(), str)
    assert_type(fetch.submit(1), TaskFuture[bytes])
    assert_type(fetch.map([1]), FutureList[bytes])
    assert_type(render(1), str)
    assert_type(render(1, return_state=True), State[str])
    return futures.result()


assert_type(pipeline(1), list[str])
assert_type(pipeline(1, return_state=True), State[list[str]])
