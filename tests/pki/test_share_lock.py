"""`pki.queries.ca_share_lock`: issuances of one CA hold a shared lock on its row, so they
never wait for each other, while a revocation's FOR UPDATE on the same row waits for them."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction

from pki import queries, services
from pki.models import CertificateAuthority

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _in_another_connection(work) -> BaseException | None:
    """Run ``work`` in a thread (so on a connection of its own); what it raised, if anything."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            with transaction.atomic():
                work()
        except BaseException as exc:
            outcome[0] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    return outcome[0]


def test_a_share_lock_admits_issuers_and_holds_off_a_revocation() -> None:
    root = services.certificate_authority_create(
        actor=None, name="lock-root", subject="CN=Lock Root", key_type="ecp256"
    )
    with transaction.atomic():
        queries.ca_share_lock(pk=root.pk)  # an issuance in flight

        def another_issuer() -> None:
            queries.ca_share_lock(pk=root.pk)

        def a_revocation() -> None:
            CertificateAuthority.objects.select_for_update(nowait=True).get(pk=root.pk)

        assert _in_another_connection(another_issuer) is None
        refused = _in_another_connection(a_revocation)
        assert isinstance(refused, DatabaseError), refused  # "could not obtain lock"
    # Once the issuance committed, the revocation's lock is free.
    assert _in_another_connection(a_revocation) is None
