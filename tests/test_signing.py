"""Result records are signed: a record without a valid signature is never unpickled."""

from __future__ import annotations

import hashlib
import json
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskyard import task
from taskyard.results import (
    JSONSerializer,
    LocalResultStorage,
    PersistedResult,
    PickleSerializer,
    UntrustedResultError,
    decode,
    encode,
)
from taskyard.signing import KEY_FILE, KEY_SETTING, result_key


class Trap:
    """A payload that leaves a mark if anyone unpickles it."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> Any:
        return (Path.touch, (self.mark,))


def _forge(record: bytes, payload: bytes) -> bytes:
    """What an attacker with write access can make: a well-formed record with their payload."""
    magic, head, _ = record.split(b"\n", 2)
    header = json.loads(head)
    header.update(length=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    return magic + b"\n" + json.dumps(header).encode() + b"\n" + payload


class TestSignatures:
    def test_a_forged_pickle_is_never_unpickled(self, tmp_path: Path) -> None:
        """A record whose payload was replaced is refused before unpickling (the trap never fires)."""
        mark = tmp_path / "pwned"
        forged = _forge(encode(42, PickleSerializer()), pickle.dumps(Trap(mark)))
        with pytest.raises(UntrustedResultError, match="not signed with this process's result key"):
            decode(forged, PickleSerializer(), "record")
        assert not mark.exists()

    def test_a_record_signed_with_another_key_is_untrusted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Written under one TASKYARD_RESULT_KEY, read under another: refused, naming the setting."""
        monkeypatch.setenv(KEY_SETTING, "a" * 32)
        record = encode({"x": 1}, PickleSerializer())
        monkeypatch.setenv(KEY_SETTING, "b" * 32)
        with pytest.raises(UntrustedResultError, match=KEY_SETTING):
            decode(record, PickleSerializer(), "record")
        monkeypatch.setenv(KEY_SETTING, "a" * 32)
        assert decode(record, PickleSerializer(), "record").value == {"x": 1}

    def test_json_needs_no_trust(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A JSON record reads under any key: parsing JSON cannot run code."""
        monkeypatch.setenv(KEY_SETTING, "a" * 32)
        record = encode([1, 2], JSONSerializer())
        monkeypatch.setenv(KEY_SETTING, "b" * 32)
        assert decode(record, JSONSerializer(), "record").value == [1, 2]

    def test_records_from_before_signing_are_untrusted(self) -> None:
        """An unsigned (TYRS1) pickle record is refused and says why; a TYRS1 JSON record still reads."""
        payload = pickle.dumps(7)
        header = {"serializer": "pickle", "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        old = b"TYRS1\n" + json.dumps(header).encode() + b"\n" + payload
        with pytest.raises(UntrustedResultError, match="before taskyard signed"):
            decode(old, PickleSerializer(), "record")
        text = b"[7]"
        header = {"serializer": "json", "length": len(text), "sha256": hashlib.sha256(text).hexdigest()}
        assert decode(b"TYRS1\n" + json.dumps(header).encode() + b"\n" + text, JSONSerializer(), "r").value == [7]

    def test_a_short_key_setting_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKYARD_RESULT_KEY shorter than 16 characters is an error saying how to make one."""
        monkeypatch.setenv(KEY_SETTING, "secret")
        with pytest.raises(ValueError, match="at least 16 characters"):
            result_key()


class TestInFlows:
    def test_a_forged_cache_record_is_a_miss_with_a_warning(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A cache record an attacker rewrote makes the task run again; the trap never fires."""
        storage, mark = tmp_path / "store", tmp_path / "pwned"

        @task(cache_key_fn=lambda c, p: "k", result_storage=str(storage))
        def value() -> str:
            return "fresh"

        assert value() == "fresh"
        record = storage / "cache" / "k"
        record.write_bytes(_forge(record.read_bytes(), pickle.dumps(Trap(mark))))
        assert value(return_state=True).name == "Completed" and not mark.exists()
        assert any("not signed" in r.getMessage() for r in caplog.records)

    def test_reading_a_forged_result_is_a_clear_error(self, tmp_path: Path) -> None:
        """A persisted result replaced by a forged record raises UntrustedResultError when read."""
        storage, mark = tmp_path / "store", tmp_path / "pwned"

        @task(persist_result=True, result_storage=str(storage))
        def value() -> int:
            return 1

        state = value(return_state=True)
        record = Path(state.result_location)
        record.write_bytes(_forge(record.read_bytes(), pickle.dumps(Trap(mark))))
        stored = PersistedResult(LocalResultStorage(storage), record.name, PickleSerializer())
        with pytest.raises(UntrustedResultError):
            state.model_copy(update={"data": stored}).result()
        assert not mark.exists()


KEY_RACE = """
import sys
from taskyard.signing import result_key
sys.stdin.readline()
print(result_key(sys.argv[1]).hex())
"""


class TestKeyFile:
    def test_made_on_first_use_private(self, tmp_path: Path) -> None:
        """The home is created 0700 and the key file 0600, holding 32 random bytes."""
        home = tmp_path / "home"
        key = result_key(home)
        assert len(key) == 32 and (home / KEY_FILE).read_bytes() == key
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / KEY_FILE).stat().st_mode) == 0o600

    def test_processes_racing_to_create_it_agree(self, tmp_path: Path) -> None:
        """Eight processes creating the key at once all end up with the same one."""
        home = tmp_path / "home"
        procs = [
            subprocess.Popen([sys.executable, "-c", KEY_RACE, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(8)
        ]
        outs = [p.communicate("go\n", timeout=60)[0].strip() for p in procs]
        assert len(set(outs)) == 1 and bytes.fromhex(outs[0]) == (home / KEY_FILE).read_bytes()
        assert [p.name for p in home.iterdir()] == [KEY_FILE]
