"""vault's raw SQL (`vault.queries`) gives what the equivalent ORM query gives, on real rows.

Run on SQLite and PostgreSQL (DATABASE_URL): the raw queries exist for the key fetch's
speed only, so any difference from the ORM form, on either database, is a bug.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from kmsportal.crypto import protocol
from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
from vault import clients, queries, server_identity, services
from vault.models import (
    Client,
    Delivery,
    Grant,
    GrantVersions,
    KeyVersion,
    OperationSession,
    ReplayNonce,
    ServerIdentity,
    SymmetricKey,
)

pytestmark = pytest.mark.django_db


def _enrolled(name: str) -> Client:
    client, token = clients.client_create(actor=None, name=name)
    csr = build_csr(private_key=generate_private_key("ecp256"), subject=parse_subject("CN=x"))
    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr.decode())
    clients.client_enroll_response(body=body)
    client.refresh_from_db()
    return client


@pytest.fixture
def world() -> dict[str, Any]:
    """Two enrolled clients (one re-enrolled, so its first certificate is held by nobody),
    a client never enrolled, keys with several versions and grants of every kind."""
    server_identity.distribution_bootstrap()
    billing = _enrolled("billing")
    first_certificate = billing.certificate_id
    billing = _enrolled_again(billing)
    reports = _enrolled("reports")
    pending, _token = clients.client_create(actor=None, name="pending")
    orders = services.symmetric_key_create(actor=None, name="orders-db")
    services.symmetric_key_rotate(actor=None, key=orders)
    archive = services.symmetric_key_create(actor=None, name="archive")
    clients.grant_create(actor=None, client=billing, key=orders, versions=GrantVersions.ALL)
    clients.grant_create(
        actor=None,
        client=reports,
        key=orders,
        expires_at=timezone.now() + timedelta(days=1),
        operations="fetch,encrypt,decrypt",
    )
    grant = clients.grant_create(actor=None, client=reports, key=archive)
    clients.grant_withdraw(actor=None, grant=grant)
    return {
        "clients": [billing, reports, pending],
        "certificates": [first_certificate, billing.certificate_id, reports.certificate_id],
        "keys": ["orders-db", "archive", "missing"],
    }


def _enrolled_again(client: Client) -> Client:
    token = clients.client_enrollment_token_renew(actor=None, client=client)
    csr = build_csr(private_key=generate_private_key("ecp256"), subject=parse_subject("CN=x"))
    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr.decode())
    clients.client_enroll_response(body=body)
    client.refresh_from_db()
    return client


def test_client_of_certificate_is_the_orm_row(world: dict[str, Any]) -> None:
    for certificate_id in [*world["certificates"], 10**9]:
        orm = (
            Client.objects.filter(certificate_id=certificate_id)
            .order_by("name")
            .values_list("id", "name", "state")
            .first()
        )
        assert queries.client_of_certificate(certificate_id) == orm
    assert queries.client_of_certificate(world["certificates"][0]) is None  # re-enrolled


def _orm_delivery(client: Client, key_name: str, version: int | None) -> tuple[Any, ...] | None:
    grant = (
        Grant.objects.select_related("key")
        .filter(client=client, withdrawn_at__isnull=True, key__name=key_name)
        .first()
    )
    if grant is None:
        return None
    key: SymmetricKey = grant.key
    versions = KeyVersion.objects.filter(key=key)
    row = (
        versions.filter(number=version) if version is not None else versions.filter(is_primary=True)
    ).first()
    identity = ServerIdentity.objects.order_by("-created_at").values_list("pk", flat=True).first()
    return (
        grant.versions,
        grant.expires_at,
        key.pk,
        key.name,
        key.state,
        key.min_decryption_version,
        None if row is None else row.number,
        None if row is None else row.state,
        None if row is None else row.is_primary,
        None if row is None else bytes(row.sealed_material),
        identity,
        grant.operations,
    )


def _normalised(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """A cursor row with its columns as the ORM converts them."""
    if row is None:
        return None
    values = list(row)
    values[1] = queries.as_datetime(values[1])
    values[2] = queries.as_uuid(values[2])
    if values[8] is not None:
        values[8] = bool(values[8])
    if values[9] is not None:
        values[9] = bytes(values[9])
    if values[10] is not None:
        values[10] = queries.as_uuid(values[10])
    return tuple(values)


def test_delivery_row_is_the_orm_answer(world: dict[str, Any]) -> None:
    seen = 0
    for client in world["clients"]:
        for key_name in world["keys"]:
            for version in (None, 1, 2, 3):
                row = queries.delivery_row(client_id=client.pk, key_name=key_name, version=version)
                assert _normalised(row) == _orm_delivery(client, key_name, version)
                seen += row is not None
    assert seen == 8  # billing and reports on orders-db, each for None, 1, 2 and 3


def test_insert_row_stores_what_the_orm_reads(world: dict[str, Any]) -> None:
    billing = world["clients"][0]
    key = SymmetricKey.objects.get(name="orders-db")
    moment = timezone.now()
    queries.insert_row(
        Delivery,
        client=billing.pk,
        key=key.pk,
        version=2,
        group="x25519",
        delivered_at=moment,
        request_id="req-1",
    )
    queries.insert_row(ReplayNonce, nonce="ab" * 16, client_name="billing", seen_at=moment)
    delivery = Delivery.objects.get(request_id="req-1")
    assert (delivery.client_id, delivery.key_id, delivery.version, delivery.group) == (
        billing.pk,
        key.pk,
        2,
        "x25519",
    )
    assert delivery.delivered_at == moment
    nonce = ReplayNonce.objects.get(nonce="ab" * 16)
    assert (nonce.client_name, nonce.seen_at) == ("billing", moment)


# --- the operations API ---------------------------------------------------------------------


def _orm_operation_grant(client: Client, key_name: str) -> tuple[Any, ...] | None:
    grant = (
        Grant.objects.select_related("key")
        .filter(client=client, withdrawn_at__isnull=True, key__name=key_name)
        .first()
    )
    if grant is None:
        return None
    key: SymmetricKey = grant.key
    primary = KeyVersion.objects.filter(key=key, is_primary=True).first()
    return (
        grant.operations,
        grant.expires_at,
        key.pk,
        key.name,
        key.state,
        key.algorithm,
        key.min_decryption_version,
        key.required_context_keys,
        key.allow_compromised_decrypt,
        key.updated_at,
        None if primary is None else primary.pk,
        None if primary is None else primary.number,
        None if primary is None else primary.state,
        None if primary is None else bytes(primary.sealed_material),
    )


def _normalised_grant(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """A cursor row with its columns as the ORM converts them."""
    if row is None:
        return None
    values = list(row)
    values[1] = queries.as_datetime(values[1])
    values[2] = queries.as_uuid(values[2])
    if isinstance(values[7], str):  # SQLite hands JSON back as text
        values[7] = json.loads(values[7])
    values[8] = bool(values[8])
    values[9] = queries.as_datetime(values[9])
    if values[13] is not None:
        values[13] = bytes(values[13])
    return tuple(values)


def test_operation_grant_row_is_the_orm_answer(world: dict[str, Any]) -> None:
    seen = 0
    for client in world["clients"]:
        for key_name in world["keys"]:
            row = queries.operation_grant_row(client_id=client.pk, key_name=key_name)
            assert _normalised_grant(row) == _orm_operation_grant(client, key_name)
            seen += row is not None
    assert seen == 2  # billing and reports on orders-db; the archive grant was withdrawn


def _session(client: Client, name: str, *, expires_in: timedelta) -> OperationSession:
    assert client.certificate_id is not None
    return OperationSession.objects.create(
        id=name.encode().hex().ljust(32, "0")[:32],
        client=client,
        certificate_id=client.certificate_id,
        sealed_key=b"sealed:" + name.encode(),
        expires_at=timezone.now() + expires_in,
    )


def test_session_row_is_the_orm_answer(world: dict[str, Any]) -> None:
    billing, reports, _pending = world["clients"]
    sessions = [
        _session(billing, "a", expires_in=timedelta(minutes=5)),
        _session(reports, "b", expires_in=timedelta(minutes=-1)),
    ]
    # a session opened with billing's first certificate: billing re-enrolled since
    stale = _session(billing, "c", expires_in=timedelta(minutes=5))
    OperationSession.objects.filter(pk=stale.pk).update(certificate_id=world["certificates"][0])
    for session in [*sessions, OperationSession.objects.get(pk=stale.pk)]:
        client = Client.objects.get(pk=session.client_id)
        orm = (
            bytes(session.sealed_key),
            session.expires_at,
            client.pk,
            client.name,
            client.state,
            client.certificate_id == session.certificate_id,
            session.certificate_id,
        )
        row = queries.session_row(session.pk)
        assert row is not None
        values = list(row)
        values[0] = bytes(values[0])
        values[1] = queries.as_datetime(values[1])
        values[2] = queries.as_uuid(values[2])
        values[5] = bool(values[5])
        assert tuple(values) == orm
    assert queries.session_row("f" * 32) is None


def test_session_counter_advance_is_the_orm_update(world: dict[str, Any]) -> None:
    billing = world["clients"][0]
    live = _session(billing, "live", expires_in=timedelta(minutes=5))
    gone = _session(billing, "gone", expires_in=timedelta(minutes=-1))
    now = timezone.now()
    for counter in (1, 1, 3, 2, 7):
        for session in (live, gone):
            before = OperationSession.objects.get(pk=session.pk).last_counter
            orm_moves = OperationSession.objects.filter(
                pk=session.pk, last_counter__lt=counter, expires_at__gt=now
            ).exists()
            moved = queries.session_counter_advance(session.pk, counter, now)
            assert moved == orm_moves
            after = OperationSession.objects.get(pk=session.pk).last_counter
            assert after == (counter if moved else before)
    assert OperationSession.objects.get(pk=live.pk).last_counter == 7
    assert OperationSession.objects.get(pk=gone.pk).last_counter == 0
