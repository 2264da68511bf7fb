"""Finding and resolving futures inside arbitrary argument structures."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from taskyard import allow_failure, quote
from taskyard.futures import TaskFuture
from taskyard.inputs import find_upstreams, resolve, scan
from taskyard.states import Completed, Failed


def _done(value: Any) -> TaskFuture[Any]:
    future: TaskFuture[Any] = TaskFuture(f"id-{id(value)}", "f")
    future._set_state(Completed(value))
    return future


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: Any
    b: Any = 0


class Model(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    x: Any


leaves = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans())


def _trees(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=3), children, max_size=3),
            st.builds(Frozen, children, children),
        ),
        max_leaves=12,
    )


def _with_futures(tree: Any) -> Any:
    """The same tree with every int leaf wrapped in a done future."""
    if isinstance(tree, bool) or tree is None or isinstance(tree, str):
        return tree
    if isinstance(tree, int):
        return _done(tree)
    if isinstance(tree, list):
        return [_with_futures(t) for t in tree]
    if isinstance(tree, tuple):
        return tuple(_with_futures(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _with_futures(v) for k, v in tree.items()}
    return Frozen(_with_futures(tree.a), _with_futures(tree.b))


def _count_ints(tree: Any) -> int:
    if isinstance(tree, bool):
        return 0
    if isinstance(tree, int):
        return 1
    if isinstance(tree, (list, tuple)):
        return sum(_count_ints(t) for t in tree)
    if isinstance(tree, dict):
        return sum(_count_ints(v) for v in tree.values())
    if isinstance(tree, Frozen):
        return _count_ints(tree.a) + _count_ints(tree.b)
    return 0


class TestResolve:
    @given(_trees(leaves))
    def test_resolving_futures_gives_back_the_plain_tree(self, tree: Any) -> None:
        """For any nesting of containers, resolve(tree with futures) == tree, and every future is found."""
        wrapped = _with_futures(tree)
        assert resolve(wrapped) == tree
        assert len(find_upstreams(wrapped)) == _count_ints(tree)

    @given(_trees(leaves))
    def test_plain_trees_are_returned_as_they_are(self, tree: Any) -> None:
        """A structure without futures is not copied and needs no resolving."""
        assert resolve(tree) is tree
        assert scan(tree, []) is False

    def test_sets_models_and_annotations(self) -> None:
        """Sets and pydantic models are rebuilt; quote is unwrapped unopened; allow_failure gives the exception."""
        failed: TaskFuture[Any] = TaskFuture("bad", "bad")
        failed._set_state(Failed(ValueError("x")))
        value = {"s": {_done(1)}, "m": Model(x=_done(2)), "q": quote([_done(3)]), "a": allow_failure(failed)}
        ups: list[Any] = []
        assert scan(value, ups) is True
        assert [u.may_fail for u in ups] == [False, False, True]  # the quoted future is not looked at
        resolved = resolve(value)
        assert resolved["s"] == {1} and resolved["m"] == Model(x=2)
        assert isinstance(resolved["q"][0], TaskFuture)
        assert isinstance(resolved["a"], ValueError)
