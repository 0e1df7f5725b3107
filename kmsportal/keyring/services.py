"""Seal and unseal through the configured master keyring; the sealed-column registry.

Settings are read in one place (`keyring_from_settings`). The loaded keyring is cached for
the life of the process: building it parses the variable and builds one AES-GCM object per
master key, which every seal and unseal then reuses.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction

from kmsportal.crypto.envelope import EnvelopeError, EnvelopeFormatError, Keyring
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.kek import KeyringConfigError, StaticKeyProvider
from kmsportal.crypto.signer import Signer

from .backends import key_backend, key_backend_reset
from .events import KeyringAction, keyring_event_record
from .models import MasterKeyRecord

logger = logging.getLogger("kmsportal.keyring")

_lock = threading.Lock()
_keyring: Keyring | None = None
# Key ids whose check value this process has already made sure is stored.
_recorded_key_ids: set[str] = set()


def static_key_provider_from_settings(*, required: bool) -> StaticKeyProvider | None:
    """The software master keys: `KMS_MASTER_KEYS`, or the development file under DEBUG.

    Returns None when they are not required (pkcs11 backend) and not configured. Raises
    `KeyringConfigError` with a message that says what to fix; never includes key bytes.
    """
    spec = settings.KMS_MASTER_KEYS.strip()
    if spec:
        return StaticKeyProvider.from_spec(spec)
    path = settings.KMS_MASTER_KEYS_FILE
    if not required:
        return StaticKeyProvider.from_file(path) if settings.DEBUG and path.exists() else None
    if not settings.DEBUG:
        raise KeyringConfigError(
            "KMS_MASTER_KEYS is not set. Production (DEBUG=False) must provide the master "
            'keyring in the environment: KMS_MASTER_KEYS="id1:<base64 of 32 random bytes>".'
        )
    if not path.exists():
        raise KeyringConfigError(
            f"KMS_MASTER_KEYS is not set and the development keyring {path} does not exist; "
            "run `manage.py bootstrap` to create it."
        )
    return StaticKeyProvider.from_file(path)


def keyring_from_settings() -> Keyring:
    """Build the keyring of the configured key backend (`KMS_KEY_BACKENDS`).

    Software: the keys of `KMS_MASTER_KEYS`. pkcs11: the token's master keys seal; software
    keys, when still configured, only unseal what was sealed before `keyring_migrate`.
    Raises `KeyringConfigError` with a message that says what to fix.
    """
    backend = key_backend()
    legacy = static_key_provider_from_settings(required=backend.name == "software")
    return Keyring(backend.master_key_provider(legacy))


def keyring_get() -> Keyring:
    """The process-wide keyring, loaded on first use."""
    global _keyring
    if _keyring is None:
        with _lock:
            if _keyring is None:
                _keyring = keyring_from_settings()
    return _keyring


def keyring_reset() -> None:
    """Forget the cached keyring (after the settings changed: tests, rewrap)."""
    global _keyring
    with _lock:
        _keyring = None
        _recorded_key_ids.clear()
    key_backend_reset()


def master_key_records_sync() -> list[str]:
    """Store the check value of every configured master key id not yet recorded.

    Returns the ids newly recorded. A configured id whose stored check value differs is
    not overwritten: the start-up check reports it as a wrong key.
    """
    keyring = keyring_get()
    known = set(MasterKeyRecord.objects.values_list("key_id", flat=True))
    added = []
    for key_id, check_value in keyring.key_check_values().items():
        if key_id not in known:
            MasterKeyRecord.objects.get_or_create(
                key_id=key_id, defaults={"check_value": check_value}
            )
            added.append(key_id)
        _recorded_key_ids.add(key_id)
    return added


def seal(plaintext: bytes, *, aad: bytes) -> bytes:
    """Seal `plaintext` under the primary master key, bound to `aad` (the owner row).

    Also makes sure the primary key's check value is stored, so the key that sealed
    anything can always be checked at start-up.
    """
    keyring = keyring_get()
    if keyring.primary_key_id not in _recorded_key_ids:
        master_key_records_sync()
    return keyring.seal(plaintext, aad)


def unseal(blob: bytes | memoryview, *, aad: bytes) -> bytes:
    """Open a blob sealed by `seal` with the same `aad`; raises an EnvelopeError if it fails."""
    return keyring_get().unseal(bytes(blob), aad)


def seal_material(material: bytes, *, aad: bytes) -> bytes:
    """Seal key material that must be destructible: with the pkcs11 backend it is first
    wrapped by a wrapping key of its own inside the token (destroyed by
    `sealed_material_destroy`), then sealed like everything else."""
    return seal(key_backend().material_wrap(material, aad=aad), aad=aad)


def unseal_material(blob: bytes | memoryview, *, aad: bytes) -> bytes:
    """Open what `seal_material` sealed. Raises an EnvelopeError, or a KeyBackendError
    (`KeyMaterialDestroyed` when its wrapping key is gone)."""
    payload = unseal(blob, aad=aad)
    try:
        return key_backend().material_unwrap(payload, aad=aad)
    finally:
        del payload


def sealed_material_destroy(blob: bytes, *, aad: bytes) -> bool:
    """Destroy the token-held wrapping key of a blob from `seal_material` (pkcs11).

    Returns whether a key object was destroyed (False with the software backend, whose
    blobs are erased by the caller). Every copy of the blob, backups included, is then
    unreadable. A blob that no longer opens has nothing left to destroy here.
    """
    try:
        payload = unseal(blob, aad=aad)
    except EnvelopeError:
        return False
    return key_backend().material_destroy(payload)


def private_key_signer(blob: bytes, *, aad: bytes, what: str) -> Signer:
    """The signer of a sealed private key (CA, OCSP responder): software keys are loaded,
    token keys are used where they are. Raises EnvelopeError or KeyBackendError."""
    payload = unseal(blob, aad=aad)
    try:
        return key_backend().private_key_signer(payload, what=what)
    finally:
        del payload


class SealedKind:
    """What a sealed column holds, which decides what `keyring_migrate` does with it."""

    SECRET = "secret"  # noqa: S105 - a kind name; any secret is re-sealed under the token key
    MATERIAL = "material"  # destructible material: also given a token wrapping key of its own
    PRIVATE_KEY = "private-key"  # a signing key (PKCS#8 DER): moved into the token


@dataclass(frozen=True)
class SealedField:
    """A model column that holds sealed blobs, and how to rebuild each row's AAD."""

    model_label: str
    field_name: str
    aad: Callable[[models.Model], bytes]
    kind: str = SealedKind.SECRET

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label)


_sealed_fields: list[SealedField] = []


def sealed_field_register(
    model_label: str, field_name: str, aad: Callable[..., bytes], kind: str = SealedKind.SECRET
) -> None:
    """Declare a column of sealed blobs (called from an app's `ready()`).

    `rewrap` re-seals every registered column, and the start-up check refuses to let a
    master key id be removed while any registered column still holds a blob sealed by it.
    `kind` tells `keyring_migrate` what the column holds (`SealedKind`).
    """
    entry = SealedField(model_label, field_name, aad, kind)
    if entry not in _sealed_fields:
        _sealed_fields.append(entry)


def sealed_fields() -> tuple[SealedField, ...]:
    return tuple(_sealed_fields)


def sealed_blob_counts() -> Counter[str]:
    """How many stored blobs each master key id seals, across every registered column.

    Reads only the blob column, streamed; the key id comes from the blob header, so nothing
    is unsealed.
    """
    keyring_header = keyring_get().blob_key_id
    counts: Counter[str] = Counter()
    for entry in _sealed_fields:
        rows = (
            entry.model._default_manager.exclude(**{f"{entry.field_name}__isnull": True})
            .values_list(entry.field_name, flat=True)
            .iterator(chunk_size=2000)
        )
        for blob in rows:
            if not blob:
                continue  # erased (crypto-shredded) material
            try:
                counts[keyring_header(bytes(blob))] += 1
            except EnvelopeFormatError:
                counts["<unreadable>"] += 1
    return counts


class RewrapError(KMSError):
    """A sealed blob could not be opened for re-sealing (tampered or misplaced)."""

    code = "rewrap_failed"
    status = 500


@dataclass(frozen=True)
class RewrapProgress:
    field: str
    examined: int
    rewrapped: int


def _sealed_row_batches(entry: SealedField, batch_size: int) -> Iterator[list[object]]:
    """Primary keys of the rows of ``entry`` that hold a blob, ``batch_size`` at a time, in
    key order (each batch read after the previous one was handled: resumable walks)."""
    model = entry.model
    last_pk = None
    while True:
        page = model._default_manager.exclude(**{f"{entry.field_name}__isnull": True}).order_by(
            "pk"
        )
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        pks = list(page.values_list("pk", flat=True)[:batch_size])
        if not pks:
            return
        last_pk = pks[-1]
        yield pks


def sealed_blobs_rewrap(*, batch_size: int = 500) -> Iterator[RewrapProgress]:
    """Re-seal every registered sealed blob that is not under the primary master key.

    Works in batches of `batch_size` rows, each batch one transaction that locks its rows,
    re-seals them and records one audit event. Resumable and safe to interrupt: rows already
    under the primary key are skipped, so running it again continues where it stopped.
    Yields progress after each batch.
    """
    keyring = keyring_get()
    if keyring.primary_key_id not in _recorded_key_ids:
        master_key_records_sync()
    primary = keyring.primary_key_id
    for entry in _sealed_fields:
        model = entry.model
        label = f"{entry.model_label}.{entry.field_name}"
        for pks in _sealed_row_batches(entry, batch_size):
            with transaction.atomic():
                rows = model._default_manager.select_for_update().filter(pk__in=pks).order_by("pk")
                changed = 0
                from_ids: Counter[str] = Counter()
                for row in rows:
                    blob = getattr(row, entry.field_name)
                    if not blob:
                        continue
                    blob = bytes(blob)
                    old = keyring.blob_key_id(blob)
                    if old == primary:
                        continue
                    try:
                        resealed = keyring.rewrap(blob, entry.aad(row))
                    except EnvelopeError as exc:
                        # Nothing of this batch is written; the message names the row.
                        raise RewrapError(f"{label} of row {row.pk}: {exc}") from exc
                    setattr(row, entry.field_name, resealed)
                    row.save(update_fields=[entry.field_name])
                    from_ids[old] += 1
                    changed += 1
                if changed:
                    keyring_event_record(
                        action=KeyringAction.REWRAPPED,
                        target_type=entry.model_label,
                        target_label=label,
                        details={"rewrapped": changed, "from": dict(from_ids), "to": primary},
                    )
            yield RewrapProgress(label, len(pks), changed)


def storage_scrub(*, model: type[models.Model]) -> str:
    """Push erased values of ``model``'s table out of the live database files.

    An UPDATE leaves the old row version in the table's pages: PostgreSQL keeps the dead
    tuple until VACUUM, and its bytes in the page's free space even after a plain VACUUM,
    SQLite keeps freed cells unless ``secure_delete`` is on (it is, see settings) and keeps
    old pages in the WAL file until a checkpoint. Neither reaches WAL archives, replicas'
    own history or backups already taken: docs/key-custody.md says what does.

    Must run outside a transaction (VACUUM cannot); inside one it does nothing and says so.
    Returns what was done, for the caller's log.
    """
    if connection.in_atomic_block:
        return "skipped: inside a transaction"
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # FULL: plain VACUUM prunes the dead row versions but compacts the page without
            # zeroing the space they used (measured: the erased blob stayed readable in the
            # page). FULL writes the table into new files and drops the old ones; it holds
            # an exclusive lock on the table meanwhile (milliseconds for thousands of
            # versions; destruction is rare).
            cursor.execute(f"VACUUM FULL {table}")
            # MVCC: a transaction older than the erasure, running in any database of the
            # cluster, makes VACUUM keep the old row versions. Say so; running this again
            # (the next destruction, or `VACUUM FULL` by hand) finishes the job.
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND backend_xid IS NOT NULL"
            )
            (older,) = cursor.fetchone()
            if older:
                logger.warning(
                    "VACUUM FULL %s ran while %d other transaction(s) were writing in this "
                    "PostgreSQL cluster: erased row versions they may still see stay in the "
                    "table files until the next VACUUM FULL",
                    model._meta.db_table,
                    older,
                )
                return (
                    f"VACUUM FULL {model._meta.db_table} (incomplete: {older} older transactions)"
                )
            return f"VACUUM FULL {model._meta.db_table}"
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return "WAL checkpoint (secure_delete is on)"
    return f"nothing to do on {connection.vendor}"


@dataclass(frozen=True)
class MigrateProgress:
    field: str
    examined: int
    resealed: int
    wrapped: int
    moved_keys: int


class MigrateError(KMSError):
    """keyring_migrate cannot go on; the message names the row or the setting."""

    code = "keyring_migrate_failed"
    status = 500


def keyring_migrate_to_token(*, batch_size: int = 200) -> Iterator[MigrateProgress]:
    """Move a software deployment into the PKCS#11 token, in batches, resumably.

    Needs the pkcs11 backend with the old software keys still configured (they unseal).
    Per row of every registered sealed column: key material gets a token wrapping key of its
    own (`SealedKind.MATERIAL`), PKCS#8 private keys become non-extractable token objects
    (`SealedKind.PRIVATE_KEY`), and everything ends up sealed under the token's master key.
    Each batch is one transaction with one `keyring.migrated` event; rows already migrated
    are skipped, so running it again continues where it stopped. Token objects made for a
    batch that then fails are orphans that protect nothing (never referenced).
    """
    from .backends.base import is_key_reference, is_wrapped_material

    backend = key_backend()
    if backend.name != "pkcs11":
        raise MigrateError(
            "keyring_migrate --to pkcs11 needs KMS_KEY_BACKEND=pkcs11 (keep KMS_MASTER_KEYS set "
            "until it has finished: the software keys unseal what they sealed)"
        )
    keyring = keyring_get()
    if keyring.primary_key_id not in _recorded_key_ids:
        master_key_records_sync()
    primary = keyring.primary_key_id
    for entry in _sealed_fields:
        model = entry.model
        label = f"{entry.model_label}.{entry.field_name}"
        for pks in _sealed_row_batches(entry, batch_size):
            resealed = wrapped = moved = 0
            with transaction.atomic():
                rows = model._default_manager.select_for_update().filter(pk__in=pks).order_by("pk")
                from_ids: Counter[str] = Counter()
                for row in rows:
                    blob = getattr(row, entry.field_name)
                    if not blob:
                        continue
                    blob = bytes(blob)
                    aad = entry.aad(row)
                    old_id = keyring.blob_key_id(blob)
                    try:
                        payload = keyring.unseal(blob, aad)
                    except EnvelopeError as exc:
                        raise MigrateError(f"{label} of row {row.pk}: {exc}") from exc
                    changed = old_id != primary
                    if entry.kind == SealedKind.MATERIAL and not is_wrapped_material(payload):
                        payload = backend.material_wrap(payload, aad=aad)
                        wrapped += 1
                        changed = True
                    elif entry.kind == SealedKind.PRIVATE_KEY and not is_key_reference(payload):
                        from kmsportal.crypto.x509 import private_key_from_der

                        payload = backend.private_key_store(private_key_from_der(payload)).payload
                        moved += 1
                        changed = True
                    if not changed:
                        continue
                    setattr(row, entry.field_name, keyring.seal(payload, aad))
                    row.save(update_fields=[entry.field_name])
                    from_ids[old_id] += 1
                    resealed += 1
                    del payload
                if resealed:
                    keyring_event_record(
                        action=KeyringAction.MIGRATED,
                        target_type=entry.model_label,
                        target_label=label,
                        details={
                            "resealed": resealed,
                            "wrapping_keys_created": wrapped,
                            "private_keys_moved": moved,
                            "from": dict(from_ids),
                            "to": primary,
                            "token_label": backend.token.token_label,  # type: ignore[attr-defined]
                        },
                    )
            yield MigrateProgress(label, len(pks), resealed, wrapped, moved)
