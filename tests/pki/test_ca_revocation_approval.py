"""The two-person rule for revoking a CA: one CA operator asks (portal revoke page), a second
approves (CA revocation approvals), and only the approval revokes: the CA tree, the CRLs and
their events exactly as a direct revocation. Rejecting, withdrawing and expiry change nothing
but the request; the requester cannot approve; `cert_revoke` refuses CA certificates; leaf
certificates keep the one-step revocation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from accounts.roles import Role
from audit.checking import audit_chain_check
from audit.models import AuditEvent
from kmsportal.crypto.crl import load_crl, revoked_serials
from kmsportal.two_person import TwoPersonError
from pki import services
from pki.approvals import (
    ca_revocation_approve,
    ca_revocation_reject,
    ca_revocation_request,
    ca_revocation_withdraw,
)
from pki.errors import PkiError
from pki.models import (
    CARevocationRequest,
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    RevocationList,
)
from tests.factories import approver_make

from .conftest import csr_pem

Status = CARevocationRequest.Status


def issue(ca: CertificateAuthority, key: object, name: str) -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


def ca_certificate(ca: CertificateAuthority) -> Certificate:
    return Certificate.objects.get(ca_id=ca.parent_id, serial_hex=ca.serial_hex)


def latest_crl(ca: CertificateAuthority) -> RevocationList:
    return RevocationList.objects.filter(ca=ca).order_by("-crl_number").first()


def on_crl(ca: CertificateAuthority) -> set[int]:
    return revoked_serials(load_crl(bytes(latest_crl(ca).crl_der)))


def snapshot() -> tuple[object, ...]:
    """What a refused or non-revoking step must leave unchanged (besides the request)."""
    return (
        sorted(CertificateAuthority.objects.values_list("name", "state")),
        sorted(Certificate.objects.values_list("pk", "status", "revocation_reason")),
        sorted(RevocationList.objects.values_list("ca__name", "crl_number")),
    )


@pytest.fixture
def tree(root, ec_key) -> dict[str, object]:
    """root → mid → low, with leaves under mid and low."""
    mid = services.certificate_authority_create(
        actor=None, name="mid", subject="CN=Mid CA", parent=root, key_type="ecp256", path_length=1
    )
    low = services.certificate_authority_create(
        actor=None, name="low", subject="CN=Low CA", parent=mid, key_type="ecp256"
    )
    return {
        "mid": mid,
        "low": low,
        "certificate": ca_certificate(mid),
        "mid_leaf": issue(mid, ec_key, "mid.example.org"),
        "low_leaves": [issue(low, ec_key, f"low{i}.example.org") for i in range(2)],
    }


@pytest.fixture
def operators(db):
    """Two CA operators who may approve (own password, own authenticator)."""
    return approver_make("olga-operator", Role.CA_OPERATOR), approver_make(
        "omar-operator", Role.CA_OPERATOR
    )


# --- through the portal ---------------------------------------------------------------------


@pytest.mark.django_db
def test_request_then_second_operator_approves_revokes_the_tree(
    operators, signed_in, root, tree
) -> None:
    asker_user, approver_user = operators
    asker, approver = signed_in(asker_user), signed_in(approver_user)
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    url = f"/pki/certificates/{record.pk}/revoke/"
    assert "two-person rule" in asker.get(url).content.decode()

    form = {"reason": "keyCompromise", "invalidity_date": "2026-01-15T08:30"}
    confirm = asker.post(url, form)
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Request revocation (needs a second CA operator)" in text
    assert 'name="comment"' in text
    before = snapshot()
    done = asker.post(url, {**form, "comment": "key found on a laptop", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == "/pki/revocations/"
    assert snapshot() == before  # asking revokes nothing, publishes nothing
    asked = CARevocationRequest.objects.get()
    assert (asked.status, asked.reason, asked.ca.name) == (Status.PENDING, "keyCompromise", "mid")
    assert asked.invalidity_date.isoformat() == "2026-01-15T08:30:00+00:00"
    assert asked.comment == "key found on a laptop"
    assert asked.expires_at - asked.requested_at == timedelta(days=7)

    # The inbox shows the impact; the requester sees Withdraw, not Approve.
    inbox = asker.get("/pki/revocations/").content.decode()
    # mid's leaf, low's two leaves and low's own certificate
    assert "CA mid, the CAs below it (low) and 4 certificates" in inbox
    assert f"/pki/revocations/{asked.pk}/withdraw/" in inbox
    assert f"/approvals/ca-revocation/{asked.pk}/" not in inbox
    # The approver reviews on the confirmation page: nothing is approved from the inbox.
    assert (
        f"/approvals/ca-revocation/{asked.pk}/"
        in approver.get("/pki/revocations/").content.decode()
    )
    confirmation = approver.get(f"/approvals/ca-revocation/{asked.pk}/").content.decode()
    for fact in ("Revoke CA mid", record.serial_number_display, "keyCompromise", "low"):
        assert fact in confirmation, fact
    # The CA and its certificate show the pending request.
    assert "waiting for approval" in asker.get("/pki/cas/mid/").content.decode()
    assert "waiting for approval" in asker.get(f"/pki/certificates/{record.pk}/").content.decode()

    root_crl = latest_crl(root).crl_number
    # The old one-click endpoint approves nothing: it leads to the confirmation page.
    old = approver.post(f"/pki/revocations/{asked.pk}/approve/")
    assert old.status_code == 302 and old["Location"] == f"/approvals/ca-revocation/{asked.pk}/"
    asked.refresh_from_db()
    assert asked.status == Status.PENDING
    approved = approver.post(f"/approvals/ca-revocation/{asked.pk}/", {"decision": "approve"})
    assert approved.status_code == 302
    asked.refresh_from_db()
    assert (asked.status, asked.decided_by_name) == (Status.APPROVED, "omar-operator")

    # Exactly as a direct revocation: the tree, the certificates below, the CRLs.
    record.refresh_from_db()
    assert (record.status, record.revocation_reason) == (CertificateStatus.REVOKED, "keyCompromise")
    assert record.invalidity_date.isoformat() == "2026-01-15T08:30:00+00:00"
    mid: CertificateAuthority = tree["mid"]  # type: ignore[assignment]
    low: CertificateAuthority = tree["low"]  # type: ignore[assignment]
    for ca in (mid, low):
        ca.refresh_from_db()
        assert ca.state == CAState.REVOKED
    for leaf in [tree["mid_leaf"], *tree["low_leaves"]]:  # type: ignore[list-item]
        leaf.refresh_from_db()
        assert (leaf.status, leaf.revocation_reason) == (CertificateStatus.REVOKED, "cACompromise")
    assert latest_crl(root).crl_number == root_crl + 1
    assert int(mid.serial_hex, 16) in on_crl(root)
    assert int(low.serial_hex, 16) in on_crl(mid)
    assert int(tree["mid_leaf"].serial_hex, 16) in on_crl(mid)  # type: ignore[union-attr]
    page = approver.get("/pki/cas/mid/").content.decode()
    assert "it issues nothing more" in page and "approved (revoked)" in page

    # Every step audited with its actor, the approval after the revocation's own events.
    events = list(
        AuditEvent.objects.filter(action__startswith="ca.")
        .exclude(action="ca.created")
        .order_by("sequence")
        .values_list("action", "actor_name", "target_label")
    )
    assert events == [
        ("ca.revocation_requested", "olga-operator", "mid"),
        ("ca.revoked", "omar-operator", "mid"),
        ("ca.revoked", "omar-operator", "low"),
        ("ca.revocation_approved", "omar-operator", "mid"),
    ]
    revoked_event = AuditEvent.objects.get(action="certificate.revoked")
    assert revoked_event.actor_name == "omar-operator"
    requested = AuditEvent.objects.get(action="ca.revocation_requested")
    assert requested.details["certificates_below"] == 4 and requested.details["cas_below"] == [
        "low"
    ]
    assert audit_chain_check().ok


@pytest.mark.django_db
def test_the_requester_cannot_approve(operators, signed_in, tree) -> None:
    asker_user, _ = operators
    asked = ca_revocation_request(
        actor=asker_user,
        certificate=tree["certificate"],
        reason="superseded",
        comment="no longer needed",
    )
    before = snapshot()
    client = signed_in(asker_user)
    response = client.post(
        f"/approvals/ca-revocation/{asked.pk}/", {"decision": "approve"}, follow=True
    )
    assert "a different person who may revoke certificates must approve it" in (
        response.content.decode()
    )
    with pytest.raises(TwoPersonError, match="two-person rule"):
        ca_revocation_approve(actor=asker_user, request=asked)
    assert snapshot() == before
    asked.refresh_from_db()
    assert asked.status == Status.PENDING
    assert not AuditEvent.objects.filter(action="ca.revocation_approved").exists()


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.AUDITOR, Role.KEY_CUSTODIAN])
@pytest.mark.django_db
def test_roles_without_the_revoke_permission_cannot_decide(
    operators, role_client, role: Role, tree
) -> None:
    asked = ca_revocation_request(
        actor=operators[0],
        certificate=tree["certificate"],
        reason="superseded",
        comment="no longer needed",
    )
    before = snapshot()
    client = role_client(role)
    for decision in ("approve", "reject", "withdraw"):
        assert client.post(f"/pki/revocations/{asked.pk}/{decision}/").status_code == 403
    assert client.get("/pki/revocations/").status_code == (
        403 if role is Role.KEY_CUSTODIAN else 200
    )
    assert snapshot() == before
    asked.refresh_from_db()
    assert asked.status == Status.PENDING


@pytest.mark.django_db
def test_reject_and_withdraw_change_nothing_but_the_request(operators, signed_in, tree) -> None:
    asker_user, other_user = operators
    asker, other = signed_in(asker_user), signed_in(other_user)
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    before = snapshot()

    first = ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    # Only the requester withdraws; others reject.
    with pytest.raises(PkiError, match="can withdraw this request"):
        ca_revocation_withdraw(actor=other_user, request=first)
    with pytest.raises(PkiError, match="withdraw it instead"):
        ca_revocation_reject(actor=asker_user, request=first)
    response = other.post(f"/pki/revocations/{first.pk}/reject/", {"comment": "not this one"})
    assert response.status_code == 302
    first.refresh_from_db()
    assert (first.status, first.decided_by_name, first.decision_comment) == (
        Status.REJECTED,
        "omar-operator",
        "not this one",
    )
    # A decided request cannot be approved any more.
    with pytest.raises(PkiError, match="already rejected"):
        ca_revocation_approve(actor=other_user, request=first)

    second = ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    assert asker.post(f"/pki/revocations/{second.pk}/withdraw/").status_code == 302
    second.refresh_from_db()
    assert (second.status, second.decided_by_name) == (Status.WITHDRAWN, "olga-operator")

    assert snapshot() == before
    events = list(
        AuditEvent.objects.filter(action__startswith="ca.revocation_")
        .order_by("sequence")
        .values_list("action", "actor_name")
    )
    assert events == [
        ("ca.revocation_requested", "olga-operator"),
        ("ca.revocation_rejected", "omar-operator"),
        ("ca.revocation_requested", "olga-operator"),
        ("ca.revocation_withdrawn", "olga-operator"),
    ]
    assert "Nothing waits for approval." in asker.get("/pki/revocations/").content.decode()


@pytest.mark.django_db
def test_an_expired_request_cannot_be_approved(operators, signed_in, tree) -> None:
    asker_user, approver_user = operators
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    asked = ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    CARevocationRequest.objects.filter(pk=asked.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    before = snapshot()
    approver = signed_in(approver_user)
    inbox = approver.get("/pki/revocations/").content.decode()
    assert "expired" in inbox and f"/approvals/ca-revocation/{asked.pk}/" not in inbox
    response = approver.post(
        f"/approvals/ca-revocation/{asked.pk}/", {"decision": "approve"}, follow=True
    )
    assert "This request expired" in response.content.decode()
    assert snapshot() == before
    # Asking again lapses the old one (visibly) and starts a new week.
    again = ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    asked.refresh_from_db()
    assert asked.status == Status.EXPIRED
    lapsed = AuditEvent.objects.get(action="ca.revocation_expired")
    assert lapsed.details["request"] == asked.pk and lapsed.details["requested_by"] == (
        asker_user.username
    )
    ca_revocation_approve(actor=approver_user, request=again)
    record.refresh_from_db()
    assert record.is_revoked


@pytest.mark.django_db
def test_one_pending_request_per_certificate(operators, signed_in, tree) -> None:
    asker_user, other_user = operators
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    other = signed_in(other_user)
    events = AuditEvent.objects.count()
    with pytest.raises(PkiError, match="already waiting for approval"):
        ca_revocation_request(
            actor=other_user, certificate=record, reason="cACompromise", comment="no longer needed"
        )
    response = other.post(
        f"/pki/certificates/{record.pk}/revoke/",
        {"reason": "cACompromise", "confirm": "yes", "comment": "compromised"},
    )
    assert response.status_code == 400
    assert "already waiting for approval" in response.content.decode()
    assert CARevocationRequest.objects.count() == 1
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_bad_requests_are_refused(operators, tree, ec_key) -> None:
    asker_user, _ = operators
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    before = (snapshot(), AuditEvent.objects.count())
    for blank in ("", "   \n"):
        with pytest.raises(PkiError, match="say why this CA must be revoked"):
            ca_revocation_request(
                actor=asker_user, certificate=record, reason="superseded", comment=blank
            )
    with pytest.raises(PkiError, match="cannot be put on hold"):
        ca_revocation_request(
            actor=asker_user,
            certificate=record,
            reason="certificateHold",
            comment="no longer needed",
        )
    with pytest.raises(PkiError, match="goes with keyCompromise"):
        ca_revocation_request(
            actor=asker_user,
            certificate=record,
            reason="superseded",
            invalidity_date=timezone.now() - timedelta(days=1),
            comment="no longer needed",
        )
    with pytest.raises(PkiError, match="not the certificate of a CA"):
        ca_revocation_request(
            actor=asker_user,
            certificate=tree["mid_leaf"],
            reason="superseded",
            comment="no longer needed",
        )
    assert (snapshot(), AuditEvent.objects.count()) == before
    assert not CARevocationRequest.objects.exists()


@pytest.mark.django_db
def test_approval_is_refused_when_the_certificate_was_revoked_meanwhile(operators, tree) -> None:
    asker_user, approver_user = operators
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    asked = ca_revocation_request(
        actor=asker_user, certificate=record, reason="superseded", comment="no longer needed"
    )
    services.certificate_revoke(actor=None, certificate=record, reason="cACompromise")
    before = snapshot()
    with pytest.raises(PkiError, match="was revoked meanwhile"):
        ca_revocation_approve(actor=approver_user, request=asked)
    assert snapshot() == before
    ca_revocation_reject(actor=approver_user, request=asked)


@pytest.mark.django_db
def test_leaf_certificates_still_revoke_in_one_step(operators, signed_in, tree) -> None:
    leaf: Certificate = tree["mid_leaf"]  # type: ignore[assignment]
    client = signed_in(operators[0])
    url = f"/pki/certificates/{leaf.pk}/revoke/"
    confirm = client.post(url, {"reason": "superseded"}).content.decode()
    assert "Revoke this certificate?" in confirm and "Request revocation" not in confirm
    done = client.post(url, {"reason": "superseded", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == f"/pki/certificates/{leaf.pk}/"
    leaf.refresh_from_db()
    assert leaf.is_revoked
    assert not CARevocationRequest.objects.exists()


@pytest.mark.django_db
def test_cert_revoke_refuses_a_ca_certificate(root, tree) -> None:
    mid: CertificateAuthority = tree["mid"]  # type: ignore[assignment]
    before = (snapshot(), AuditEvent.objects.count())
    with pytest.raises(CommandError, match="two-person rule"):
        call_command(
            "cert_revoke", "--ca", "root", "--serial", mid.serial_hex, "--reason", "superseded"
        )
    assert (snapshot(), AuditEvent.objects.count()) == before


@pytest.mark.django_db
def test_pages_fit_a_strict_csp(operators, signed_in, tree) -> None:
    """No inline script or style on the new and changed pages (the CSP allows neither)."""
    ca_revocation_request(
        actor=operators[0],
        certificate=tree["certificate"],
        reason="superseded",
        comment="no longer needed",
    )
    client = signed_in(operators[1])
    record: Certificate = tree["certificate"]  # type: ignore[assignment]
    for url in ("/pki/revocations/", "/pki/cas/mid/", f"/pki/certificates/{record.pk}/"):
        page = client.get(url).content.decode()
        assert "<script" not in page and "style=" not in page and "<style" not in page, url
    inbox = client.get("/pki/revocations/").content.decode()
    assert "table-stack" in inbox and 'data-label="Would revoke"' in inbox


# --- a race of two approvers (PostgreSQL row locks) -----------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_approvers_racing_approve_once(make_user, root, ec_key) -> None:
    mid = services.certificate_authority_create(
        actor=None, name="race-mid", subject="CN=Race CA", parent=root, key_type="ecp256"
    )
    issue(mid, ec_key, "race.example.org")
    asker = make_user("olga-operator", Role.CA_OPERATOR)
    approvers = [approver_make(f"approver-{i}", Role.CA_OPERATOR) for i in range(4)]
    asked = ca_revocation_request(
        actor=asker,
        certificate=ca_certificate(mid),
        reason="superseded",
        comment="no longer needed",
    )
    barrier = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def approve(user) -> None:
        try:
            barrier.wait(timeout=60)
            ca_revocation_approve(actor=user, request=asked)
            outcomes.append("approved")
        except PkiError as exc:
            outcomes.append(str(exc))
        except BaseException as exc:  # pragma: no cover - reported below
            outcomes.append(f"unexpected: {exc!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert outcomes.count("approved") == 1, outcomes
    assert all("already approved" in o for o in outcomes if o != "approved"), outcomes
    assert AuditEvent.objects.filter(action="ca.revocation_approved").count() == 1
    assert AuditEvent.objects.filter(action="certificate.revoked").count() == 1
    mid.refresh_from_db()
    assert mid.state == CAState.REVOKED
    assert audit_chain_check().ok
