"""pki's raw SQL: the few reads and writes a benchmark showed the ORM too slow for.

Each function here has an ORM twin in tests/pki/test_queries.py that must give the same
answer on real data, on SQLite and PostgreSQL. Only pki's own tables appear here; other apps
reach them through `pki.selectors` and `pki.services`, never through this module.

Why raw:
    client_certificate_row  the key fetch's first read (bench module ``distribution``): the
                            ORM compiles the query on every call, which cost several times
                            the query itself (issue 9).
    newest_crl_row          every CRL download (bench ``revocation``): a subquery rather
                            than a join, which PostgreSQL plans in half the time.
    crl_entry_rows          the CRL builder's rows, without Django's per-row converters.
    crl_der_store           the CRL bytes as a binary parameter on PostgreSQL.
    ca_share_lock           a shared row lock (FOR SHARE), which the ORM cannot take: it
                            has only FOR UPDATE and FOR NO KEY UPDATE, which would make the
                            issuers of one CA wait for each other.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Model, TextField
from django.db.models.functions import Cast

from .models import Certificate, CertificateAuthority, CertificateStatus, RevocationList


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


@functools.cache
def _client_certificate_sql(vendor: str) -> str:
    # The certificate row (serial, CA by name, profile) and its CA's certificate.
    return (
        'SELECT c."id", c."status", c."certificate_der", a."certificate_der" '  # noqa: S608
        f"FROM {_table(Certificate)} c "
        f'JOIN {_table(CertificateAuthority)} a ON a."id" = c."ca_id" '
        'WHERE c."serial_hex" = %s AND a."name" = %s AND c."profile" = %s'
    )


def client_certificate_row(
    *, serial_hex: str, ca_name: str, profile: str
) -> tuple[int, str, bytes, bytes] | None:
    """(id, status, certificate DER, CA certificate DER) of the certificate with this serial
    and profile issued by the CA called ``ca_name``; None if there is none. A serial is
    unique per CA (constraint pki_certificate_serial), so at most one row matches."""
    row = _fetch_one(_client_certificate_sql(connection.vendor), [serial_hex, ca_name, profile])
    if row is None:
        return None
    pk, status, der, ca_der = row
    return pk, status, bytes(der), bytes(ca_der)


@functools.cache
def _newest_crl_sql(vendor: str) -> str:
    # Indexes: the CA's unique name, then (ca, is_delta, crl_number). A subquery rather than
    # a join: PostgreSQL plans it in half the time, which is a third of what the query costs.
    return (
        'SELECT r."id", r."sha256", r."this_update", r."next_update" '  # noqa: S608 (no input)
        f"FROM {_table(RevocationList)} r "
        f'WHERE r."ca_id" = (SELECT a."id" FROM {_table(CertificateAuthority)} a '
        'WHERE a."name" = %s) AND r."is_delta" = %s ORDER BY r."crl_number" DESC LIMIT 1'
    )


def newest_crl_row(*, ca_name: str, delta: bool) -> tuple[int, str, Any, Any] | None:
    """(id, sha256, this_update, next_update) of the CA's newest complete (or delta) CRL, the
    dates as the cursor gives them (SQLite: naive UTC); None without CA or CRL."""
    row = _fetch_one(_newest_crl_sql(connection.vendor), [ca_name, delta])
    return None if row is None else (row[0], row[1], row[2], row[3])


def crl_entry_rows(
    ca_id: Any, *, since: datetime | None = None
) -> list[tuple[str, str, str, str | None]]:
    """Every revoked certificate of the CA (revoked at or after ``since``, if given) as
    (serial hex, revocation date text, reason, invalidity date text).

    The ORM writes the SQL; the rows come straight from the cursor, with the two dates as
    the database's text (SQLite: naive UTC; PostgreSQL, session time zone UTC: ``+00``):
    Django's per-row datetime converters cost more than building the CRL entries.
    """
    revoked = Certificate.objects.filter(ca_id=ca_id, status=CertificateStatus.REVOKED)
    if since is not None:
        revoked = revoked.filter(revoked_at__gte=since)  # index (ca, revoked_at)
    rows = (
        revoked.order_by()
        .annotate(
            revoked_text=Cast("revoked_at", TextField()),
            invalid_text=Cast("invalidity_date", TextField()),
        )
        .values_list("serial_hex", "revoked_text", "revocation_reason", "invalid_text")
    )
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        entries: list[tuple[str, str, str, str | None]] = cursor.fetchall()
        return entries


def crl_der_store(*, pk: int, der: bytes) -> None:
    """Write the CRL bytes into the RevocationList row ``pk``.

    On PostgreSQL, Django's psycopg cursor binds parameters on the client, as a hex literal
    the server parses again: ~200 ms for the 4 MB CRL of 100,000 entries. A cursor with
    server-side binding on the same connection (same transaction) sends the bytes as a
    binary parameter in ~25 ms. Elsewhere the ORM writes them.
    """
    if connection.vendor == "postgresql":
        import psycopg

        table = RevocationList._meta.db_table
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                f"UPDATE {table} SET crl_der = %b WHERE id = %s",  # noqa: S608 - model's table
                [der, pk],
            )
    else:
        RevocationList.objects.filter(pk=pk).update(crl_der=der)


@functools.cache
def _standing_sql(vendor: str) -> str:
    return (
        'SELECT "status", "not_after" <= %s FROM '  # noqa: S608 (no input)
        f'{_table(Certificate)} WHERE "id" = %s'
    )


def certificate_standing_row(*, pk: int, now: datetime) -> tuple[str, bool] | None:
    """(status, whether not_after <= ``now``) of certificate ``pk``, or None: every protected
    operations-API request asks it (bench module ``operations``)."""
    moment = Certificate._meta.get_field("not_after").get_db_prep_value(now, connection)
    row = _fetch_one(_standing_sql(connection.vendor), [moment, pk])
    return None if row is None else (row[0], bool(row[1]))


def ca_share_lock(*, pk: Any) -> None:
    """PostgreSQL: hold a shared lock on the CA's row until the transaction ends. Issuances
    of one CA run in parallel (shared locks do not conflict); a revocation of the CA, which
    locks the row FOR UPDATE, waits for them and they for it. SQLite: nothing to do, every
    writing transaction holds the database's write lock already."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {_table(CertificateAuthority)} WHERE id = %s FOR SHARE",  # noqa: S608
            [pk],
        )
