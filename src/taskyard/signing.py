"""The result key: records are signed (HMAC-SHA256) so only trusted ones are unpickled.

The key is ``TASKYARD_RESULT_KEY`` when set (a secret string shared by every
host that reads or writes the same result storage), otherwise 32 random
bytes in ``<TASKYARD_HOME>/result-key``, made on first use: the home is
created ``0700``, the file ``0600``, written under a temporary name and
linked into place, so processes racing to create it all end up with the
one that won. See docs/results.md for the threat model.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

__all__ = ("KEY_SETTING", "KEY_FILE", "result_key", "sign", "verify")

KEY_SETTING = "TASKYARD_RESULT_KEY"
KEY_FILE = "result-key"
_KEY_BYTES = 32
_MIN_SETTING_CHARS = 16

_lock = threading.Lock()
_keys: dict[str, bytes] = {}


def result_key(home: str | os.PathLike[str] | None = None) -> bytes:
    """The key records are signed with here.

    Args:
        home: TASKYARD_HOME as the flow run saw it; None reads the setting now.

    Raises:
        ValueError: ``TASKYARD_RESULT_KEY`` is set but too short to be a secret.
        OSError: The key file can neither be read nor created.
    """
    setting = os.environ.get(KEY_SETTING)
    if setting:
        if len(setting) < _MIN_SETTING_CHARS:
            raise ValueError(
                f"{KEY_SETTING} must be a secret of at least {_MIN_SETTING_CHARS} characters, "
                "e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return setting.encode()
    if home is None:
        from taskyard.settings import current_settings

        home = current_settings().home
    path = Path(home).expanduser() / KEY_FILE
    cache_key = str(path)
    with _lock:
        known = _keys.get(cache_key)
        if known is None:
            known = _keys[cache_key] = _load_or_create(path)
    return known


def _load_or_create(path: Path) -> bytes:
    key = _read(path)
    if key is not None:
        return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{KEY_FILE}~{os.getpid()}~{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(_KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process won the race: use its key
            pass
        except OSError:  # no hard links here: create it exclusively instead (readers retry while short)
            with contextlib.suppress(FileExistsError):
                _write_exclusive(path, tmp.read_bytes())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    for _ in range(100):  # a key file is linked whole; only a foreign writer could leave it short
        key = _read(path)
        if key is not None:
            return key
        time.sleep(0.01)
    raise OSError(f"the result key {path} is not {_KEY_BYTES} bytes long; delete it to make a new one")


def _write_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if len(data) >= _KEY_BYTES else None


def sign(key: bytes, *parts: bytes) -> str:
    """The HMAC-SHA256 of the parts, as hex."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def verify(key: bytes, signature: object, *parts: bytes) -> bool:
    """True if ``signature`` is the key's HMAC of the parts (compared in constant time)."""
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(key, *parts))
