"""Persisted results: serializers, storage, and the on-disk record format.

A record is one file (or object) holding::

    b"TYRS2\\n" + header (JSON, one line) + b"\\n" + payload

The header names the serializer, the payload's length and SHA-256, an
optional expiry and cache key (for caches), and an HMAC-SHA256 of all that
under the result key (signing.py). A record is written to a temporary name
and renamed into place, so a process killed mid-write leaves either the
old record or none; a record whose checksum does not match is reported as
corrupt, and one whose signature does not verify is never unpickled (only
JSON payloads, which cannot run code, are read without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from taskyard import signing, writers
from taskyard.exceptions import TaskyardError

__all__ = (
    "Serializer",
    "PickleSerializer",
    "JSONSerializer",
    "get_serializer",
    "ResultStorage",
    "LocalResultStorage",
    "FsspecResultStorage",
    "get_storage",
    "ResultRecord",
    "CorruptResultError",
    "UntrustedResultError",
    "PersistedResult",
)

_MAGIC = b"TYRS2\n"
_UNSIGNED_MAGIC = b"TYRS1\n"  # records written before signing: untrusted


class CorruptResultError(TaskyardError, ValueError):
    """A stored result record is damaged or incomplete."""


class UntrustedResultError(CorruptResultError):
    """A record's signature does not verify with the result key: it is not unpickled."""


@runtime_checkable
class Serializer(Protocol):
    """Anything with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """cloudpickle: any Python object, read back by the same Python."""

    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        import cloudpickle

        data: bytes = cloudpickle.dumps(obj)
        return data

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


class JSONSerializer:
    """JSON: readable by anything; only JSON-safe values."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        data = json.dumps(obj).encode("utf-8")
        # JSON would hand back another value (tuples as lists, int keys as
        # strings): refuse rather than return something else later.
        if json.loads(data) != obj:
            raise ValueError(
                f"{type(obj).__name__} value does not survive a JSON round trip unchanged "
                "(tuples, non-string keys, ...); use result_serializer='pickle'"
            )
        return data

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


_SERIALIZERS: dict[str, type[Any]] = {"pickle": PickleSerializer, "json": JSONSerializer}


def get_serializer(spec: Any) -> Any:
    """A serializer from a name (``"pickle"``, ``"json"``), an object, or None (pickle).

    Raises:
        ValueError: Unknown serializer name.
        TypeError: An object without ``dumps``/``loads``.
    """
    if spec is None:
        return PickleSerializer()
    if isinstance(spec, str):
        try:
            return _SERIALIZERS[spec]()
        except KeyError:
            raise ValueError(f"result_serializer {spec!r} is unknown; use one of {', '.join(_SERIALIZERS)} or an object with dumps/loads") from None
    if isinstance(spec, Serializer):
        return spec
    raise TypeError(f"result_serializer must be 'pickle', 'json' or an object with dumps/loads, not {spec!r}")


def _serializer_name(serializer: Any) -> str:
    return getattr(serializer, "name", type(serializer).__qualname__)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A decoded record: the value, when it expires (None: never), and its cache key."""

    value: Any
    expires_at: float | None
    cache_key: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


def encode(
    value: Any, serializer: Any, expires_at: float | None = None, cache_key: str | None = None, key: bytes | None = None
) -> bytes:
    """A signed record of ``value`` (``key``: the result key; None looks it up for the current settings)."""
    payload: bytes = serializer.dumps(value)
    header: dict[str, Any] = {
        "serializer": _serializer_name(serializer),
        "length": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "expires_at": expires_at,
        "cache_key": cache_key,
    }
    header["hmac"] = signing.sign(key or signing.result_key(), _canonical(header))
    return _MAGIC + json.dumps(header).encode() + b"\n" + payload


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in header.items() if k != "hmac"}, sort_keys=True).encode()


def _needs_trust(serializer: Any) -> bool:
    # Unpickling (or an unknown serializer) can run code; parsing JSON cannot.
    return not isinstance(serializer, JSONSerializer)


def decode(data: bytes, serializer: Any, where: str, key: bytes | None = None) -> ResultRecord:
    """Check and decode a record.

    Raises:
        UntrustedResultError: The serializer can run code (pickle) and the
            record's signature does not verify with the result key.
        CorruptResultError: The record is truncated, damaged or not a record.
    """
    unsigned = data.startswith(_UNSIGNED_MAGIC)
    if not (data.startswith(_MAGIC) or unsigned):
        raise CorruptResultError(f"{where} is not a taskyard result record")
    head, sep, payload = data[len(_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        raise CorruptResultError(f"{where} has a damaged header") from None
    if not isinstance(header, dict):
        raise CorruptResultError(f"{where} has a damaged header")
    expires_at, cache_key = header.get("expires_at"), header.get("cache_key")
    if not (expires_at is None or type(expires_at) in (int, float)) or not (cache_key is None or type(cache_key) is str):
        raise CorruptResultError(f"{where} has a damaged header")
    if not sep or len(payload) != header.get("length") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CorruptResultError(f"{where} is incomplete or damaged (checksum mismatch)")
    if header.get("serializer") != _serializer_name(serializer):
        raise CorruptResultError(f"{where} was written with serializer {header.get('serializer')!r}, not {_serializer_name(serializer)!r}")
    if _needs_trust(serializer):
        if unsigned:
            raise UntrustedResultError(
                f"{where} was written before taskyard signed its records; it is not unpickled (write it again)"
            )
        if not signing.verify(key or signing.result_key(), header.get("hmac"), _canonical(header)):
            raise UntrustedResultError(
                f"{where} is not signed with this process's result key, so it is not unpickled; records written "
                f"on another host need the same key there: set {signing.KEY_SETTING} to one secret on every host"
            )
    return ResultRecord(serializer.loads(payload), expires_at, cache_key)


class ResultStorage(Protocol):
    """Where records live: ``write`` (atomic), ``read`` (None if absent), ``location``."""

    def write(self, key: str, data: bytes) -> str: ...

    def read(self, key: str) -> bytes | None: ...

    def location(self, key: str) -> str: ...


class LocalResultStorage:
    """Records as files under a local directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"LocalResultStorage({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalResultStorage) and other.root == self.root

    def location(self, key: str) -> str:
        return str(self.root / key)

    def write(self, key: str, data: bytes) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if writers.should_sweep(str(path.parent)):
            writers.sweep_local(path.parent)
        tmp = path.parent / writers.temp_name(path.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return str(path)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None


class FsspecResultStorage:
    """Records under any fsspec URL (``s3://bucket/prefix``, ``memory://x``, ...).

    Object stores write whole objects atomically; on file-like systems the
    record goes to a temporary name first and is moved into place.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __repr__(self) -> str:
        return f"FsspecResultStorage({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FsspecResultStorage) and other.url == self.url

    def _fs(self) -> tuple[Any, str]:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root

    def location(self, key: str) -> str:
        return f"{self.url}/{key}"

    def write(self, key: str, data: bytes) -> str:
        fs, root = self._fs()
        path = f"{root}/{key}"
        if writers.should_sweep(self.url):
            self._sweep(fs, root)
        tmp = f"{root}/{writers.temp_name(key.replace('/', '_'))}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
        return self.location(key)

    @staticmethod
    def _sweep(fs: Any, root: str) -> None:
        """Remove temporary objects of dead writers at the root (best effort)."""
        try:
            listing = fs.ls(root, detail=True)
        except (OSError, NotImplementedError):
            return
        for info in listing:
            name = str(info.get("name", "")).rsplit("/", 1)[-1]
            mtime = info.get("mtime") or info.get("created")
            stamp = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime
            if writers.is_stale(name, float(stamp) if isinstance(stamp, (int, float)) else None):
                with contextlib.suppress(OSError):
                    fs.rm_file(info["name"])

    def read(self, key: str) -> bytes | None:
        fs, root = self._fs()
        try:
            return fs.cat_file(f"{root}/{key}")  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None


def get_storage(spec: Any, home: str | os.PathLike[str]) -> Any:
    """A storage from None (``<home>/results``), a path, a URL or a storage object."""
    if spec is None:
        return LocalResultStorage(Path(home) / "results")
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if "://" in text and not text.startswith("file://"):
            return FsspecResultStorage(text)
        return LocalResultStorage(text.removeprefix("file://"))
    if all(hasattr(spec, m) for m in ("write", "read", "location")):
        return spec
    raise TypeError(f"result_storage must be a path, a URL or a storage object, not {spec!r}")


def check_storage(spec: Any, owner: str) -> None:
    """Fail at decoration for a storage that cannot work here."""
    if isinstance(spec, str) and "://" in spec and not spec.startswith("file://"):
        import importlib.util

        if importlib.util.find_spec("fsspec") is None:
            raise ValueError(f"{owner}: result_storage={spec!r} needs fsspec: pip install 'taskyard[fsspec]'")
    elif spec is not None:
        get_storage(spec, ".")


class PersistedResult:
    """Where a persisted result lives; ``State.result()`` loads it on demand."""

    __slots__ = ("storage", "key", "serializer", "home")

    def __init__(self, storage: Any, key: str, serializer: Any, home: str | None = None) -> None:
        self.storage, self.key, self.serializer = storage, key, serializer
        self.home = home  # TASKYARD_HOME of the run that wrote it: where its result key is

    def __repr__(self) -> str:
        return f"PersistedResult({self.storage.location(self.key)!r})"

    def __taskyard_load__(self) -> Any:
        data = self.storage.read(self.key)
        if data is None:
            from taskyard.exceptions import MissingResultError

            raise MissingResultError(f"no result stored at {self.storage.location(self.key)}")
        return decode(data, self.serializer, self.storage.location(self.key), signing.result_key(self.home)).value
