"""vault's raw SQL: the key fetch's reads and inserts (bench module ``distribution``), and
the operations API's grant, session and replay-counter statements (bench module
``operations``).

The fetch is the KMS's hot path (issue 9): the ORM's per-call SQL compilation cost several
times the queries themselves, so they are written once here, compiled once per database
vendor, and run on the cursor. Each function has an ORM twin in tests/vault/test_queries.py
that must give the same answer on real data, on SQLite and PostgreSQL. Only vault's own
tables appear here: what the fetch needs of a certificate it asks `pki.selectors`.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import connection, models

from .models import Client, Grant, KeyVersion, OperationSession, ServerIdentity, SymmetricKey


def table(model: type[models.Model]) -> str:
    """The quoted table name of ``model``."""
    return connection.ops.quote_name(model._meta.db_table)


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID column as read from the cursor (32 hex digits on SQLite, UUID on PostgreSQL)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def as_datetime(value: Any) -> datetime | None:
    """A datetime column as read from the cursor: SQLite's holds UTC without an offset."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None:
        return None
    moment: datetime = value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """The first row of ``sql`` run with ``params`` on the default connection, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def insert_row(model: type[models.Model], **values: Any) -> None:
    """INSERT one row, each value adapted by its field as the ORM would (UUIDs, datetimes),
    without the ORM's per-call SQL compilation."""
    fields: list[models.Field[Any, Any]] = []
    names: list[str] = []
    for name in values:
        field = model._meta.get_field(name)
        if not isinstance(field, models.Field) or field.column is None:
            raise TypeError(f"{name} is not a column of {model.__name__}")  # a relation
        fields.append(field)
        names.append(connection.ops.quote_name(field.column))
    columns = ", ".join(names)
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
    ]
    placeholders = ", ".join(["%s"] * len(params))
    sql = f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@functools.cache
def _client_sql(vendor: str) -> str:
    # Like `Client.objects.filter(certificate_id=...).order_by("name").first()`.
    return (
        f'SELECT "id", "name", "state" FROM {table(Client)} '  # noqa: S608 (no input)
        'WHERE "certificate_id" = %s ORDER BY "name" LIMIT 1'
    )


def client_of_certificate(certificate_id: int) -> tuple[uuid.UUID, str, str] | None:
    """(id, name, state) of the client holding certificate ``certificate_id``, or None."""
    row = fetch_one(_client_sql(connection.vendor), [certificate_id])
    return None if row is None else (as_uuid(row[0]), row[1], row[2])


@functools.cache
def _key_lock_sql(vendor: str) -> str:
    return f'SELECT "id" FROM {table(SymmetricKey)} WHERE "name" = %s FOR UPDATE'  # noqa: S608


def key_row_lock(key_name: str) -> None:
    """Lock the row of the key called ``key_name`` until the transaction ends (PostgreSQL;
    the caller checks ``connection.features.has_select_for_update``)."""
    fetch_one(_key_lock_sql(connection.vendor), [key_name])


@functools.cache
def _delivery_sql(vendor: str, by_number: bool) -> str:
    # The live grant of the client for the key (at most one: vault_one_live_grant), the key,
    # the version asked for (or the primary) if it exists, and the newest server identity.
    version = 'v."number" = %s' if by_number else 'v."is_primary" = %s'
    return (
        'SELECT g."versions", g."expires_at", k."id", k."name", k."state", '  # noqa: S608
        'k."min_decryption_version", v."number", v."state", v."is_primary", '
        'v."sealed_material", '
        f'(SELECT s."id" FROM {table(ServerIdentity)} s ORDER BY s."created_at" DESC LIMIT 1), '
        'g."operations" '
        f"FROM {table(Grant)} g "
        f'JOIN {table(SymmetricKey)} k ON k."id" = g."key_id" '
        f'LEFT JOIN {table(KeyVersion)} v ON v."key_id" = k."id" AND {version} '
        'WHERE g."client_id" = %s AND g."withdrawn_at" IS NULL AND k."name" = %s'
    )


def delivery_row(
    *, client_id: uuid.UUID, key_name: str, version: int | None
) -> tuple[Any, ...] | None:
    """For the live grant of client ``client_id`` for the key called ``key_name``:
    (grant versions, grant expiry, key id, key name, key state, key min_decryption_version,
    version number, version state, version is_primary, sealed material, newest server
    identity id, grant operations), the version columns None when the key has no such
    version (``version``, or the primary when None); None without a live grant. Columns as
    the cursor gives them (see `as_uuid`, `as_datetime`)."""
    by_number = version is not None
    return fetch_one(
        _delivery_sql(connection.vendor, by_number),
        [
            version if by_number else True,
            Client._meta.pk.get_db_prep_value(client_id, connection),
            key_name,
        ],
    )


# --- the operations API -----------------------------------------------------------------------


@functools.cache
def _operation_grant_sql(vendor: str) -> str:
    # The client's live grant for the key by name (at most one: vault_one_live_grant), the
    # key's policy and state, and its primary version: one statement, compiled once (the
    # ORM's per-call compilation cost more than the query on the hot path).
    return (
        'SELECT g."operations", g."expires_at", k."id", k."name", k."state", '  # noqa: S608
        'k."algorithm", k."min_decryption_version", k."required_context_keys", '
        'k."allow_compromised_decrypt", k."updated_at", '
        'v."id", v."number", v."state", v."sealed_material" '
        f"FROM {table(Grant)} g "
        f'JOIN {table(SymmetricKey)} k ON k."id" = g."key_id" '
        f'LEFT JOIN {table(KeyVersion)} v ON v."key_id" = k."id" AND v."is_primary" = %s '
        'WHERE g."client_id" = %s AND g."withdrawn_at" IS NULL AND k."name" = %s'
    )


def operation_grant_row(*, client_id: Any, key_name: str) -> tuple[Any, ...] | None:
    """The client's live grant for the key named ``key_name`` and the key with its primary
    version: (operations, expires_at, key id, name, state, algorithm, min_decryption_version,
    required_context_keys, allow_compromised_decrypt, updated_at, version id, number, state,
    sealed_material), the version columns None without a primary version."""
    pk = Client._meta.pk
    assert pk is not None  # every model has one
    return fetch_one(
        _operation_grant_sql(connection.vendor),
        [True, pk.get_db_prep_value(client_id, connection), key_name],
    )


@functools.cache
def _session_sql(vendor: str) -> str:
    # The session and its client's state, one statement compiled once (hot path).
    return (
        'SELECT s."sealed_key", s."expires_at", c."id", c."name", c."state", '  # noqa: S608
        'c."certificate_id" = s."certificate_id", s."certificate_id" '
        f"FROM {table(OperationSession)} s "
        f'JOIN {table(Client)} c ON c."id" = s."client_id" WHERE s."id" = %s'
    )


def session_row(session_id: str) -> tuple[Any, ...] | None:
    """The operations session and its client: (sealed_key, expires_at, client id, name,
    state, whether the client still holds the session's certificate, certificate id)."""
    return fetch_one(_session_sql(connection.vendor), [session_id])


@functools.cache
def _counter_sql(vendor: str) -> str:
    # The replay check: the counter only moves forward, atomically on every node.
    return (
        f'UPDATE {table(OperationSession)} SET "last_counter" = %s '  # noqa: S608
        'WHERE "id" = %s AND "last_counter" < %s AND "expires_at" > %s'
    )


def session_counter_advance(session_id: str, counter: int, now: datetime) -> bool:
    """Move the session's counter to ``counter`` if that is forward and the session is live
    at ``now``; False (nothing changed) for a replayed or reordered request."""
    field = OperationSession._meta.get_field("expires_at")
    with connection.cursor() as cursor:
        cursor.execute(
            _counter_sql(connection.vendor),
            [counter, session_id, counter, field.get_db_prep_value(now, connection)],
        )
        return bool(cursor.rowcount == 1)
