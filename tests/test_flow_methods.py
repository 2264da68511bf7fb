"""The small documented methods: Flow.validate_parameters, serialize_parameters, from_source; State.fresh_copy."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel

from taskyard import Flow, flow
from taskyard.exceptions import ParameterValidationError
from taskyard.states import Completed, Failed


class Point(BaseModel):
    x: int
    y: int


@flow
def typed(n: int, point: Point, label: str = "x") -> int:
    return n


class TestValidateParameters:
    def test_coerces_values_to_their_hints(self) -> None:
        """validate_parameters returns a new dict with values cast to the type hints."""
        given = {"n": "3", "point": {"x": "1", "y": 2}}
        out = typed.validate_parameters(given)
        assert out == {"n": 3, "point": Point(x=1, y=2)}
        assert given == {"n": "3", "point": {"x": "1", "y": 2}}

    def test_bad_value_names_the_parameter(self) -> None:
        """A value that does not fit its hint raises ParameterValidationError naming it."""
        with pytest.raises(ParameterValidationError, match="'n'"):
            typed.validate_parameters({"n": "three", "point": {"x": 1, "y": 2}})

    def test_missing_and_unknown_parameters_are_type_errors(self) -> None:
        """A missing required parameter or an unknown one raises TypeError naming it."""
        with pytest.raises(TypeError, match="'point'"):
            typed.validate_parameters({"n": 1})
        with pytest.raises(TypeError, match="'nope'"):
            typed.validate_parameters({"n": 1, "point": {"x": 1, "y": 2}, "nope": 0})

    def test_option_still_turns_validation_off_for_runs(self) -> None:
        """validate_parameters=False keeps runs unvalidated; the option reads as should_validate_parameters."""
        loose = typed.with_options(validate_parameters=False)
        assert loose.should_validate_parameters is False
        assert loose("3", point=None) == "3"  # type: ignore[arg-type]


class TestSerializeParameters:
    def test_values_become_json_safe(self) -> None:
        """Models, tuples and paths become JSON values."""
        out = typed.serialize_parameters({"n": 1, "point": Point(x=1, y=2), "label": ("a", Path("b"))})
        assert out == {"n": 1, "point": {"x": 1, "y": 2}, "label": ["a", "b"]}

    def test_unserializable_value_becomes_its_type_name(self) -> None:
        """A value JSON cannot hold becomes "<TypeName>" and the rest is kept."""
        out = typed.serialize_parameters({"n": 1, "lock": threading.Lock()})
        assert out["n"] == 1
        assert out["lock"] == f"<{type(threading.Lock()).__name__}>"


class TestFromSource:
    def _project(self, tmp_path: Path) -> Path:
        (tmp_path / "pipelines").mkdir()
        (tmp_path / "pipelines" / "__init__.py").write_text("")
        (tmp_path / "pipelines" / "etl_src_mod.py").write_text(
            textwrap.dedent(
                """
                from taskyard import flow, task

                @task
                def double(x):
                    return 2 * x

                @flow
                def etl(x: int) -> int:
                    return double(x)

                not_a_flow = 3
                """
            )
        )
        return tmp_path

    def test_loads_a_flow_from_a_file_entrypoint(self, tmp_path: Path) -> None:
        """from_source(dir, "path/file.py:name") returns the flow, ready to call."""
        loaded = Flow.from_source(self._project(tmp_path), "pipelines/etl_src_mod.py:etl")
        assert isinstance(loaded, Flow)
        assert loaded(4) == 8

    def test_loads_a_flow_from_a_module_entrypoint(self, tmp_path: Path) -> None:
        """A dotted module path is imported from the source directory."""
        loaded = Flow.from_source(str(self._project(tmp_path)), "pipelines.etl_src_mod:etl")
        assert loaded(5) == 10

    def test_remote_sources_are_refused_clearly(self) -> None:
        """A URL is refused with a message saying only local directories are supported."""
        with pytest.raises(ValueError, match="local directory"):
            Flow.from_source("https://example.invalid/repo.git", "flows.py:etl")

    def test_bad_entrypoints_name_the_culprit(self, tmp_path: Path) -> None:
        """A missing file, a missing name and a non-flow each raise a clear error."""
        root = self._project(tmp_path)
        with pytest.raises(LookupError, match="no such file"):
            Flow.from_source(root, "pipelines/missing.py:etl")
        with pytest.raises(LookupError, match="'nope'"):
            Flow.from_source(root, "pipelines/etl_src_mod.py:nope")
        with pytest.raises(TypeError, match="not a @flow"):
            Flow.from_source(root, "pipelines/etl_src_mod.py:not_a_flow")
        with pytest.raises(ValueError, match="not a directory"):
            Flow.from_source(root / "nowhere", "x.py:etl")


class TestFreshCopy:
    def test_copy_is_stamped_now_and_keeps_the_result(self) -> None:
        """fresh_copy gives a new timestamp and the same type, name and data."""
        state = Completed(41)
        copy = state.fresh_copy()
        assert copy.timestamp >= state.timestamp
        assert (copy.type, copy.name, copy.result()) == (state.type, state.name, 41)

    def test_update_changes_fields(self) -> None:
        """update= changes fields of the copy, not of the original."""
        state = Failed(ValueError("x"))
        copy = state.fresh_copy(update={"message": "again"})
        assert copy.message == "again"
        assert state.message == "ValueError: x"


class TestSerializeFuturesAndStates:
    def test_futures_and_states_become_placeholders(self) -> None:
        """A future or a State as a parameter is recorded as "<TaskFuture>" / "<State>", never resolved."""
        out = typed.serialize_parameters({"n": Completed(1), "m": 2})
        assert out == {"n": "<State>", "m": 2}
