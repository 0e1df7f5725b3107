"""Revocation: every RFC 5280 reason, invalidity dates, holds and their release, expired
certificates, revoking twice, intermediate CAs (the cascade, in one transaction), audit, and
the command. The CRL that each revocation publishes is read back and checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from accounts.roles import Role
from audit.checking import audit_chain_check
from audit.models import AuditEvent
from kmsportal.crypto.crl import RevocationReason, load_crl, revoked_serials
from pki import services
from pki.models import (
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    RevocationList,
)
from pki.revocation import REVOCATION_REASONS
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_pem, pki_state

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def issue(ca: CertificateAuthority, key: object, name: str = "www.example.org") -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


def latest(ca: CertificateAuthority) -> RevocationList:
    """The newest CRL of ``ca``: after a revocation its delta CRL, which lists every
    revocation since the complete CRL (RFC 5280 5.2.4)."""
    return RevocationList.objects.filter(ca=ca).order_by("-crl_number").first()


def crl_of(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return load_crl(bytes(latest(ca).crl_der))


def entry(crl: x509.CertificateRevocationList, record: Certificate) -> x509.RevokedCertificate:
    found = crl.get_revoked_certificate_by_serial_number(int(record.serial_hex, 16))
    assert found is not None, f"{record.serial_number_display} is not on the CRL"
    return found


def state(ca: CertificateAuthority) -> tuple[object, ...]:
    """What a refused revocation must leave unchanged."""
    return (*pki_state(), RevocationList.objects.filter(ca=ca).count(), latest(ca).crl_number)


# --- reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", REVOCATION_REASONS, ids=lambda r: r.value)
def test_every_rfc_5280_reason(issuing, ec_key, reason: RevocationReason) -> None:
    record = issue(issuing, ec_key)
    number = latest(issuing).crl_number
    revoked = services.certificate_revoke(actor=None, certificate=record, reason=reason.value)
    record.refresh_from_db()
    assert (record.status, record.revocation_reason) == (CertificateStatus.REVOKED, reason.value)
    assert record.revoked_at is not None and revoked.revoked_at == record.revoked_at
    assert latest(issuing).crl_number == number + 1  # published in the same transaction
    listed = entry(crl_of(issuing), record)
    assert listed.revocation_date_utc == record.revoked_at
    reasons = [e for e in listed.extensions if e.oid == CRLEntryExtensionOID.CRL_REASON]
    if reason is RevocationReason.UNSPECIFIED:
        assert reasons == []  # RFC 5280 5.3.1: absent rather than unspecified
    else:
        assert reasons[0].value.reason == reason.flag and not reasons[0].critical


def test_the_reason_list_is_rfc_5280() -> None:
    assert [r.value for r in REVOCATION_REASONS] == [
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
    ]


def test_key_compromise_with_an_invalidity_date(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    since = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    services.certificate_revoke(
        actor=None, certificate=record, reason="keyCompromise", invalidity_date=since
    )
    record.refresh_from_db()
    assert record.invalidity_date == since.replace(microsecond=0)
    info = revoked_serials(crl_of(issuing))[int(record.serial_hex, 16)]
    assert info.reason is RevocationReason.KEY_COMPROMISE
    assert info.invalidity_date == since.replace(microsecond=0)


def test_a_naive_invalidity_date_is_utc(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(
        actor=None,
        certificate=record,
        reason="cACompromise",
        invalidity_date=datetime(2026, 3, 1, 12, 0),
    )
    record.refresh_from_db()
    assert record.invalidity_date == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reason", "invalidity", "message"),
    [
        ("keycompromise", None, "unknown revocation reason 'keycompromise'; choose one of"),
        ("", None, "unknown revocation reason ''"),
        ("removeFromCRL", None, "only appears in delta CRLs"),
        ("aACompromise", None, "attribute certificates"),
        ("superseded", datetime(2026, 1, 1, tzinfo=UTC), "goes with keyCompromise or cACompromise"),
        (
            "keyCompromise",
            datetime.now(UTC) + timedelta(days=1),
            "is in the future",
        ),
        ("keyCompromise", datetime(1949, 12, 31, tzinfo=UTC), "before 1950"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    issuing, ec_key, reason: str, invalidity: datetime | None, message: str
) -> None:
    record = issue(issuing, ec_key)
    before = state(issuing)
    with pytest.raises(services.PkiError, match=message):
        services.certificate_revoke(
            actor=None, certificate=record, reason=reason, invalidity_date=invalidity
        )
    record.refresh_from_db()
    assert record.status == CertificateStatus.VALID and state(issuing) == before


def test_revoking_twice_is_a_clear_error(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="superseded")
    before = state(issuing)
    for reason in ("superseded", "keyCompromise", "certificateHold"):
        with pytest.raises(services.PkiError, match=r"is already revoked .* reason superseded"):
            services.certificate_revoke(actor=None, certificate=record, reason=reason)
    assert state(issuing) == before
    record.refresh_from_db()
    assert record.revocation_reason == "superseded"


def test_an_expired_certificate_can_still_be_revoked(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    Certificate.objects.filter(pk=record.pk).update(not_after=timezone.now() - timedelta(days=1))
    record.refresh_from_db()
    assert record.is_expired
    services.certificate_revoke(actor=None, certificate=record, reason="privilegeWithdrawn")
    assert int(record.serial_hex, 16) in revoked_serials(crl_of(issuing))


# --- certificate hold -----------------------------------------------------------------------


def test_a_hold_is_listed_then_released_off_the_next_crl(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    other = issue(issuing, ec_key, "other.example.org")
    services.certificate_revoke(actor=None, certificate=other, reason="superseded")
    services.certificate_revoke(actor=None, certificate=record, reason="certificateHold")
    held = latest(issuing)
    info = revoked_serials(crl_of(issuing))[int(record.serial_hex, 16)]
    assert info.reason is RevocationReason.CERTIFICATE_HOLD
    record.refresh_from_db()
    assert record.is_on_hold

    services.certificate_release(actor=None, certificate=record)
    record.refresh_from_db()
    assert record.status == CertificateStatus.VALID
    assert (record.revoked_at, record.revocation_reason, record.invalidity_date) == (None, "", None)
    released = latest(issuing)
    # A release publishes a complete CRL and its delta (no removeFromCRL needed).
    assert released.crl_number == held.crl_number + 2 and released.trigger == "release"
    assert released.is_delta and released.base_crl_number == held.crl_number + 1
    serials = revoked_serials(crl_of(issuing))
    assert int(record.serial_hex, 16) not in serials
    assert int(other.serial_hex, 16) in serials
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.action == "certificate.released"
    assert event.details["crl_number"] == released.base_crl_number
    assert event.details["held_since"] is not None


def test_a_hold_can_be_made_final(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="certificateHold")
    services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    record.refresh_from_db()
    assert record.revocation_reason == "keyCompromise"
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.details["previous_reason"] == "certificateHold"
    info = revoked_serials(crl_of(issuing))[int(record.serial_hex, 16)]
    assert info.reason is RevocationReason.KEY_COMPROMISE
    with pytest.raises(services.PkiError, match="revoked for keyCompromise, which is final"):
        services.certificate_release(actor=None, certificate=record)


def test_only_a_hold_can_be_released(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    before = state(issuing)
    with pytest.raises(services.PkiError, match="is not revoked"):
        services.certificate_release(actor=None, certificate=record)
    assert state(issuing) == before


# --- transactions and audit -----------------------------------------------------------------


def test_a_revocation_that_rolls_back_leaves_no_crl_behind(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    before = state(issuing)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
        raise RuntimeError("the caller's transaction fails")
    assert state(issuing) == before
    assert int(record.serial_hex, 16) not in revoked_serials(crl_of(issuing))
    record.refresh_from_db()
    assert record.status == CertificateStatus.VALID


def test_if_the_audit_event_cannot_be_written_nothing_happens(
    issuing, ec_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pki import revocation

    record = issue(issuing, ec_key)
    before = state(issuing)

    def broken(**kwargs: object) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(revocation, "audit_event_record", broken)
    with pytest.raises(RuntimeError):
        services.certificate_revoke(actor=None, certificate=record, reason="superseded")
    assert state(issuing) == before


def test_revocation_is_audited(issuing, ec_key, make_user) -> None:
    operator = make_user("olga", Role.CA_OPERATOR)
    record = issue(issuing, ec_key)
    services.certificate_revoke(
        actor=operator,
        certificate=record,
        reason="keyCompromise",
        invalidity_date=datetime(2026, 2, 1, tzinfo=UTC),
    )
    record.refresh_from_db()
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_name, event.target_type, event.target_id) == (
        "certificate.revoked",
        "olga",
        "pki.Certificate",
        str(record.pk),
    )
    assert event.details == {
        "ca": "issuing",
        "serial": record.serial_number_display,
        "subject": "CN=www.example.org",
        "profile": "tls-server",
        "reason": "keyCompromise",
        "revoked_at": record.revoked_at.isoformat(),
        "invalidity_date": "2026-02-01T00:00:00+00:00",
        "crl_number": latest(issuing).crl_number,
        "delta_crl": True,
    }
    assert latest(issuing).is_delta
    assert audit_chain_check().ok


def test_the_signature_vault_uses(issuing, ec_key) -> None:
    """vault.clients calls certificate_revoke(actor=..., certificate=..., reason=...)."""
    record = issue(issuing, ec_key)
    result = services.certificate_revoke(
        actor=None, certificate=record, reason="affiliationChanged"
    )
    assert result.pk == record.pk and result.is_revoked


# --- intermediate CAs -----------------------------------------------------------------------


@pytest.fixture
def tree(root: CertificateAuthority, ec_key) -> dict[str, object]:
    """root → mid (path length 1) → low; leaves under mid and low, one of them on hold."""
    mid = services.certificate_authority_create(
        actor=None, name="mid", subject="CN=Mid CA", parent=root, key_type="ecp256", path_length=1
    )
    low = services.certificate_authority_create(
        actor=None, name="low", subject="CN=Low CA", parent=mid, key_type="ecp256"
    )
    mid_leaf = issue(mid, ec_key, "mid.example.org")
    held = issue(mid, ec_key, "held.example.org")
    services.certificate_revoke(actor=None, certificate=held, reason="certificateHold")
    gone = issue(mid, ec_key, "gone.example.org")
    services.certificate_revoke(actor=None, certificate=gone, reason="superseded")
    low_leaves = [issue(low, ec_key, f"low{i}.example.org") for i in range(3)]
    mid_certificate = Certificate.objects.get(ca=root, serial_hex=mid.serial_hex)
    return {
        "mid": mid,
        "low": low,
        "mid_certificate": mid_certificate,
        "mid_leaf": mid_leaf,
        "held": held,
        "gone": gone,
        "low_leaves": low_leaves,
    }


def test_revoking_an_intermediate_revokes_everything_below_it(root, tree, ec_key) -> None:
    mid, low = tree["mid"], tree["low"]
    mid_certificate: Certificate = tree["mid_certificate"]  # type: ignore[assignment]
    assert mid_certificate.profile == "sub-ca"
    numbers = {ca.name: latest(ca).crl_number for ca in (root, mid, low)}  # type: ignore[union-attr]

    services.certificate_revoke(actor=None, certificate=mid_certificate, reason="cACompromise")

    for ca in (mid, low):
        ca.refresh_from_db()  # type: ignore[union-attr]
        assert ca.state == CAState.REVOKED and ca.revocation_reason == "cACompromise"  # type: ignore[union-attr]
    # The parent's CRL lists the intermediate.
    assert revoked_serials(crl_of(root))[int(mid.serial_hex, 16)].reason == "cACompromise"  # type: ignore[union-attr]
    # Everything mid issued: its leaf, the held one (now final), low's certificate.
    mid_crl = revoked_serials(crl_of(mid))  # type: ignore[arg-type]
    for record in (tree["mid_leaf"], tree["held"]):
        assert mid_crl[int(record.serial_hex, 16)].reason == "cACompromise"  # type: ignore[union-attr]
    assert mid_crl[int(low.serial_hex, 16)].reason == "cACompromise"  # type: ignore[union-attr]
    # What was revoked before keeps its own reason and date.
    assert mid_crl[int(tree["gone"].serial_hex, 16)].reason == "superseded"  # type: ignore[union-attr]
    low_crl = revoked_serials(crl_of(low))  # type: ignore[arg-type]
    assert {int(r.serial_hex, 16) for r in tree["low_leaves"]} == set(low_crl)  # type: ignore[union-attr]
    assert not Certificate.objects.filter(ca__in=[mid, low], status="valid").exists()
    # The parent publishes a delta CRL; each revoked CA a complete CRL and its delta.
    for ca, published in ((root, 1), (mid, 2), (low, 2)):
        assert latest(ca).crl_number == numbers[ca.name] + published  # type: ignore[union-attr]
    # Revoked CAs issue nothing more.
    for ca in (mid, low):
        with pytest.raises(services.PkiError, match="is revoked; it cannot issue"):
            issue(ca, ec_key, "late.example.org")  # type: ignore[arg-type]
    events = list(
        AuditEvent.objects.filter(action__in=["certificate.revoked", "ca.revoked"])
        .order_by("-sequence")
        .values_list("action", "target_label", "details")[:3]
    )
    assert [(a, t) for a, t, _ in reversed(events)] == [
        ("certificate.revoked", "CN=Mid CA"),
        ("ca.revoked", "mid"),
        ("ca.revoked", "low"),
    ]
    assert events[2][2]["revoked_ca"] == "mid" and events[2][2]["certificates_revoked_below"] == 6
    assert events[1][2]["certificates_revoked"] == 3 and events[0][2]["certificates_revoked"] == 3


def test_a_non_compromise_reason_revokes_below_as_cessation(root, tree) -> None:
    services.certificate_revoke(
        actor=None,
        certificate=tree["mid_certificate"],  # type: ignore[arg-type]
        reason="superseded",
    )
    record: Certificate = tree["mid_leaf"]  # type: ignore[assignment]
    record.refresh_from_db()
    assert record.revocation_reason == "cessationOfOperation"
    assert revoked_serials(crl_of(root))[int(tree["mid"].serial_hex, 16)].reason == "superseded"  # type: ignore[union-attr]


def test_the_cascade_is_one_transaction(root, tree, monkeypatch: pytest.MonkeyPatch) -> None:
    from pki import revocation

    real = revocation.audit_event_record

    def fail_on_the_last_ca(**kwargs: object) -> object:
        if kwargs.get("action") == "ca.revoked" and kwargs.get("target_label") == "low":
            raise RuntimeError("the last write fails")
        return real(**kwargs)

    monkeypatch.setattr(revocation, "audit_event_record", fail_on_the_last_ca)
    counts = (
        pki_state(),
        RevocationList.objects.count(),
        list(Certificate.objects.order_by("pk").values_list("status", "revocation_reason")),
        list(CertificateAuthority.objects.order_by("name").values_list("state", flat=True)),
    )
    with pytest.raises(RuntimeError):
        services.certificate_revoke(
            actor=None,
            certificate=tree["mid_certificate"],  # type: ignore[arg-type]
            reason="cACompromise",
        )
    assert counts == (
        pki_state(),
        RevocationList.objects.count(),
        list(Certificate.objects.order_by("pk").values_list("status", "revocation_reason")),
        list(CertificateAuthority.objects.order_by("name").values_list("state", flat=True)),
    )


def test_a_ca_certificate_cannot_be_held(root, tree) -> None:
    before = state(root)
    with pytest.raises(services.PkiError, match="a CA cannot be put on hold"):
        services.certificate_revoke(
            actor=None,
            certificate=tree["mid_certificate"],  # type: ignore[arg-type]
            reason="certificateHold",
        )
    with pytest.raises(services.PkiError, match="a CA cannot be put on hold"):
        services.certificate_revocation_preview(
            certificate=tree["mid_certificate"],  # type: ignore[arg-type]
            reason="certificateHold",
        )
    assert state(root) == before


def test_the_preview_says_what_the_cascade_takes(root, tree) -> None:
    preview = services.certificate_revocation_preview(
        certificate=tree["mid_certificate"],  # type: ignore[arg-type]
        reason="cACompromise",
    )
    assert preview.revoked_ca == tree["mid"] and preview.cas_below == ["low"]
    # mid_leaf, held, low's certificate, three low leaves (gone was revoked already)
    assert preview.certificates_below == 6
    assert preview.current_crl_number == latest(root).crl_number


def test_a_revoked_ca_key_that_cannot_sign_does_not_block_the_revocation(root, tree) -> None:
    low: CertificateAuthority = tree["low"]  # type: ignore[assignment]
    CertificateAuthority.objects.filter(pk=low.pk).update(sealed_private_key=b"\x00" * 80)
    from pki.signers import ca_signer_cache_clear

    ca_signer_cache_clear()
    services.certificate_revoke(
        actor=None,
        certificate=tree["mid_certificate"],  # type: ignore[arg-type]
        reason="keyCompromise",
    )
    low.refresh_from_db()
    assert low.state == CAState.REVOKED
    event = AuditEvent.objects.filter(action="ca.revoked", target_label="low").get()
    assert event.details["crl_number"] is None
    assert "cannot be unsealed" in event.details["crl_problem"]
    assert int(tree["mid"].serial_hex, 16) in revoked_serials(crl_of(root))  # type: ignore[union-attr]


# --- the command ----------------------------------------------------------------------------


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_cert_revoke_command(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    serial = ":".join(
        record.serial_number_display[i : i + 2]
        for i in range(0, len(record.serial_number_display), 2)
    ).lower()
    out = run(
        "cert_revoke",
        "--ca",
        "issuing",
        "--serial",
        serial,
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "2026-04-01T10:00:00Z",
    )
    record.refresh_from_db()
    assert record.revocation_reason == "keyCompromise"
    assert record.invalidity_date == datetime(2026, 4, 1, 10, tzinfo=UTC)
    assert f"Revoked serial {record.serial_number_display} of CA issuing" in out
    assert f"CRL #{latest(issuing).crl_number} published" in out
    assert AuditEvent.objects.order_by("-sequence").first().actor_type == "system"


def test_cert_revoke_command_hold_and_release(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    run(
        "cert_revoke",
        "--ca",
        "issuing",
        "--serial",
        record.serial_hex,
        "--reason",
        "certificateHold",
    )
    record.refresh_from_db()
    assert record.is_on_hold
    out = run("cert_revoke", "--ca", "issuing", "--serial", record.serial_hex, "--release")
    assert "Released the hold" in out
    record.refresh_from_db()
    assert record.status == CertificateStatus.VALID


def test_cert_revoke_command_refuses_a_ca_certificate(root, tree) -> None:
    """Revoking a CA needs a second person (two-person rule): never in one step here."""
    mid: CertificateAuthority = tree["mid"]  # type: ignore[assignment]
    before = state(root)
    with pytest.raises(CommandError, match="two-person rule") as refused:
        run("cert_revoke", "--ca", "root", "--serial", mid.serial_hex, "--reason", "cACompromise")
    assert "CA revocation approvals" in str(refused.value)
    mid.refresh_from_db()
    assert mid.state == CAState.ACTIVE
    assert state(root) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ca", "nope", "--serial", "01", "--reason", "superseded"], "no CA named 'nope'"),
        (["--ca", "issuing", "--serial", "xyz", "--reason", "superseded"], "is not a serial"),
        (["--ca", "issuing", "--serial", "01", "--reason", "superseded"], "issued no certificate"),
        (["--ca", "issuing", "--serial", "AB" * 21, "--reason", "superseded"], "longer than"),
        (["--ca", "issuing", "--serial", "{serial}", "--reason", "nope"], "unknown revocation"),
        (
            [
                "--ca",
                "issuing",
                "--serial",
                "{serial}",
                "--reason",
                "keyCompromise",
                "--invalidity-date",
                "yesterday",
            ],
            "not an ISO 8601 date",
        ),
        (
            [
                "--ca",
                "issuing",
                "--serial",
                "{serial}",
                "--reason",
                "superseded",
                "--invalidity-date",
                "2026-01-01",
            ],
            "goes with keyCompromise or cACompromise",
        ),
        (["--ca", "issuing", "--serial", "{serial}", "--release"], "is not revoked"),
        (
            [
                "--ca",
                "issuing",
                "--serial",
                "{serial}",
                "--release",
                "--invalidity-date",
                "2026-01-01",
            ],
            "goes with --reason",
        ),
    ],
)
def test_cert_revoke_command_bad_input(issuing, ec_key, args: list[str], message: str) -> None:
    record = issue(issuing, ec_key)
    before = state(issuing)
    with pytest.raises(CommandError, match=message):
        run("cert_revoke", *[a.replace("{serial}", record.serial_hex) for a in args])
    assert state(issuing) == before


def test_cert_revoke_command_twice(issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    run("cert_revoke", "--ca", "issuing", "--serial", record.serial_hex, "--reason", "superseded")
    before = state(issuing)
    with pytest.raises(CommandError, match="already revoked"):
        run(
            "cert_revoke",
            "--ca",
            "issuing",
            "--serial",
            record.serial_hex,
            "--reason",
            "superseded",
        )
    assert state(issuing) == before


def test_cert_revoke_needs_a_reason_or_release(issuing) -> None:
    with pytest.raises(CommandError, match="one of the arguments --reason --release is required"):
        run("cert_revoke", "--ca", "issuing", "--serial", "01")
