"""The operations API's loaded keys, per process.

Unsealing is cheap, but loading an RSA private key costs up to ~365 ms, so loaded keys are
kept per process, keyed by the version row and stamped with what the database said: the
key's `updated_at` (every lifecycle service saves the key row) and the version's state. Each
request reads both again (one query) before using the cache, so on every worker and server a
suspension, compromise or destruction takes effect at the next request; a stale entry is
dropped when seen, and every entry expires after `_CACHE_TTL` even if never asked for again,
so material of a destroyed version does not outlive the destruction in an idle worker by
more than that.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from kmsportal.crypto import operations as crypto_ops
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.errors import KMSError
from kmsportal.keyring.services import unseal_material

from .models import KeyVersion, SymmetricKey

_CACHE_TTL = 300.0
_CACHE_SIZE = 512


class ItemError(KMSError):
    """One item of a batch is refused (`code`, `message`); the others go on. Raised here
    when a version does not open, and by the operations service's checks."""

    code = "item_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass
class _Cached:
    stamp: tuple[Any, ...]
    key: crypto_ops.LoadedKey
    loaded_at: float
    key_id: Any = None


_cache: OrderedDict[int, _Cached] = OrderedDict()
_cache_lock = threading.Lock()
_sweeper: threading.Thread | None = None


def _sweep_forever() -> None:
    """Drop expired entries every minute even if no request comes: an idle worker must not
    keep a destroyed version's loaded key longer than `_CACHE_TTL` (+ one minute)."""
    while True:
        time.sleep(60)
        with _cache_lock:
            _evict_expired(time.monotonic())


def _start_sweeper() -> None:
    global _sweeper
    if _sweeper is None or not _sweeper.is_alive():
        _sweeper = threading.Thread(target=_sweep_forever, name="kms-key-cache", daemon=True)
        _sweeper.start()


def operation_cache_clear() -> None:
    """Forget every loaded key of this process (tests, after a keyring change)."""
    with _cache_lock:
        _cache.clear()


def _evict_expired(now: float) -> None:
    for pk in [pk for pk, entry in _cache.items() if now - entry.loaded_at > _CACHE_TTL]:
        del _cache[pk]


def loaded_key(key: SymmetricKey, version: KeyVersion) -> crypto_ops.LoadedKey:
    """The loaded (usable) key of ``version``, from this process's cache while the database
    stamp still matches, else unsealed and loaded now; ItemError if it does not open."""
    stamp = (key.updated_at, version.state, key.algorithm)
    now = time.monotonic()
    with _cache_lock:
        entry = _cache.get(version.pk)
        if entry is not None and entry.stamp == stamp and now - entry.loaded_at <= _CACHE_TTL:
            _cache.move_to_end(version.pk)
            return entry.key
        _cache.pop(version.pk, None)  # stale: the key or version changed since
    if version.sealed_material is None:
        raise ItemError("version_destroyed", f"version {version.number} is destroyed")
    try:
        material = unseal_material(bytes(version.sealed_material), aad=version.aad)
        loaded = crypto_ops.load_key(key.key_type, material, key_id=key.id, version=version.number)
    except (EnvelopeError, crypto_ops.OperationError):
        raise ItemError(
            "key_integrity_error", f"version {version.number} of {key.name} does not open"
        ) from None
    finally:
        material = b""
    with _cache_lock:
        _cache[version.pk] = _Cached(stamp=stamp, key=loaded, loaded_at=now, key_id=key.pk)
        _cache.move_to_end(version.pk)
        _evict_expired(now)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        _start_sweeper()
    return loaded


def forget_version(version_pk: int) -> None:
    with _cache_lock:
        _cache.pop(version_pk, None)


def forget_key(key_id: Any) -> None:
    """Drop every loaded version of a key this process holds (it became unusable)."""
    with _cache_lock:
        for pk in [pk for pk, entry in _cache.items() if entry.key_id == key_id]:
            del _cache[pk]
