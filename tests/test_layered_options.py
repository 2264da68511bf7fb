"""LayeredOptions: per-submission options in nested with-blocks (what dask_options and ray_options are made of)."""

from __future__ import annotations

import threading

import pytest

from taskyard.runners.base import LayeredOptions


@pytest.fixture
def options() -> LayeredOptions:
    return LayeredOptions("test_layered_options", merged=("resources",))


class TestLayeredOptions:
    def test_empty_outside_any_block(self, options: LayeredOptions) -> None:
        """Outside every block the options are empty."""
        assert dict(options.current()) == {}

    def test_inner_values_win_and_merged_keys_merge(self, options: LayeredOptions) -> None:
        """An inner block overrides plain options and merges the named mapping keys key by key."""
        with options.layer({"resources": {"GPU": 1}, "priority": 1}), options.layer({"resources": {"big": 2}, "priority": 9}) as inner:
            assert dict(inner) == {"resources": {"GPU": 1, "big": 2}, "priority": 9}
            assert options.current() == inner

    def test_none_leaves_an_option_as_it_is(self, options: LayeredOptions) -> None:
        """A None value in an inner block keeps the outer value."""
        with options.layer({"priority": 3}), options.layer({"priority": None}) as inner:
            assert dict(inner) == {"priority": 3}

    def test_leaving_a_block_restores_the_outer_options(self, options: LayeredOptions) -> None:
        """After an inner block (even one left by an exception) the outer options are back."""
        with options.layer({"priority": 1}):
            with pytest.raises(RuntimeError), options.layer({"priority": 2}):
                raise RuntimeError("left early")
            assert dict(options.current()) == {"priority": 1}
        assert dict(options.current()) == {}

    def test_options_are_read_only_and_per_thread(self, options: LayeredOptions) -> None:
        """The options in force cannot be edited in place, and another thread does not see them."""
        seen: list[dict[str, object]] = []
        with options.layer({"priority": 1}) as current:
            with pytest.raises(TypeError):
                current["priority"] = 2  # type: ignore[index]
            thread = threading.Thread(target=lambda: seen.append(dict(options.current())))
            thread.start()
            thread.join()
        assert seen == [{}]
