"""Result persistence: serializers, storage, keys, atomic writes, corruption."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskyard import flow, task
from taskyard.results import (
    CorruptResultError,
    FsspecResultStorage,
    JSONSerializer,
    LocalResultStorage,
    PersistedResult,
    PickleSerializer,
    decode,
    encode,
    get_serializer,
)


class TestRecords:
    def test_round_trip_with_each_serializer(self) -> None:
        """encode/decode give back the value with pickle and json."""
        for serializer in (PickleSerializer(), JSONSerializer()):
            assert decode(encode({"a": [1, 2]}, serializer), serializer, "x").value == {"a": [1, 2]}

    def test_damage_is_detected(self) -> None:
        """A flipped byte, a truncation or a foreign file raise CorruptResultError."""
        data = encode("value", PickleSerializer())
        for bad in (data[:-1] + b"!", data[:-4], b"not a record", data.replace(b'"pickle"', b'"json"')):
            with pytest.raises(CorruptResultError):
                decode(bad, PickleSerializer(), "record")

    def test_custom_serializer_object(self) -> None:
        """Any object with dumps/loads serves as a serializer."""

        class Upper:
            name = "upper"

            def dumps(self, obj: str) -> bytes:
                return obj.upper().encode()

            def loads(self, data: bytes) -> str:
                return data.decode()

        assert decode(encode("abc", Upper()), Upper(), "x").value == "ABC"

    def test_unknown_serializer_name(self) -> None:
        """An unknown serializer name lists the known ones."""
        with pytest.raises(ValueError, match="pickle, json"):
            get_serializer("yaml")


class TestLocalStorage:
    def test_write_is_atomic(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A write that dies before the rename leaves the old record and no temp file."""
        storage = LocalResultStorage(tmp_path)
        storage.write("k", b"old")

        def die(src: str, dst: str) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", die)
        with pytest.raises(KeyboardInterrupt):
            storage.write("k", b"new")
        monkeypatch.undo()
        assert storage.read("k") == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]

    def test_missing_key_reads_none(self, tmp_path: Path) -> None:
        """Reading an absent key gives None."""
        assert LocalResultStorage(tmp_path).read("absent") is None


class TestPersistence:
    def test_persisted_result_has_a_location_that_loads(self, tmp_path: Path) -> None:
        """persist_result=True writes the record; PersistedResult reads it back."""

        @task(persist_result=True, result_storage=str(tmp_path), result_storage_key="out-{x}")
        def square(x: int) -> int:
            return x * x

        state = square(4, return_state=True)
        assert state.result_location == str(tmp_path / "out-4")
        assert PersistedResult(LocalResultStorage(tmp_path), "out-4", PickleSerializer()).__taskyard_load__() == 16

    def test_flow_setting_persists_its_tasks(self, tmp_path: Path) -> None:
        """@flow(persist_result=True) persists the flow result and its tasks' results."""

        @task
        def one() -> int:
            return 1

        @flow(persist_result=True, result_storage=str(tmp_path))
        def f() -> int:
            return one.submit().result()

        state = f(return_state=True)
        assert state.result_location == str(tmp_path / "flow-runs" / state_id(state))
        assert len(list(tmp_path.iterdir())) == 2  # the flow-runs folder and the task's record

    def test_environment_turns_persistence_on(self, monkeypatch: pytest.MonkeyPatch, _taskyard_home: Path) -> None:
        """TASKYARD_PERSIST_RESULTS=1 persists under TASKYARD_HOME/results."""
        monkeypatch.setenv("TASKYARD_PERSIST_RESULTS", "1")

        @task
        def one() -> int:
            return 1

        state = one(return_state=True)
        assert state.result_location and Path(state.result_location).parent == _taskyard_home / "results"

    def test_unpersistable_result_fails_the_run_clearly(self, tmp_path: Path) -> None:
        """A result the serializer cannot write ends the run Failed, saying so."""

        @task(persist_result=True, result_storage=str(tmp_path), result_serializer="json")
        def not_json() -> object:
            return object()

        state = not_json(return_state=True)
        assert state.is_failed() and "could not be persisted" in (state.message or "")

    def test_fsspec_storage(self) -> None:
        """An fsspec URL (memory://) stores and reads records."""
        pytest.importorskip("fsspec", reason="fsspec is an optional extra")

        @task(persist_result=True, result_storage="memory://taskyard-test", result_storage_key="v")
        def value() -> str:
            return "in memory"

        state = value(return_state=True)
        assert state.result_location == "memory://taskyard-test/v"
        storage = FsspecResultStorage("memory://taskyard-test")
        assert decode(storage.read("v"), PickleSerializer(), "v").value == "in memory"  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"result_serializer": "yaml"}, "result_serializer.*yaml"),
            ({"result_storage_key": "{nope}"}, "result_storage_key.*nope"),
            ({"result_storage": 42}, "result_storage"),
        ],
    )
    def test_bad_result_options_fail_at_decoration(self, options: dict[str, object], match: str) -> None:
        """Unknown serializers, keys naming missing parameters and bad storages fail early."""
        with pytest.raises((ValueError, TypeError), match=match):
            task(**options)(lambda x: x)


def state_id(state: object) -> str:
    return Path(state.result_location).name  # type: ignore[attr-defined]
