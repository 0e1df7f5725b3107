"""Issuance: leaf certificates from a CSR or from a server-generated key pair, with the
confirmation pages' previews built by the very same code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.db import transaction

from audit.services import audit_event_record
from kmsportal.actors import Actor
from kmsportal.crypto.profiles import Profile
from kmsportal.crypto.signer import PrivateKey, PublicKey, Signer
from kmsportal.crypto.x509 import (
    MIN_EXPORT_PASSWORD_LENGTH,
    CertificateSummary,
    KeyType,
    build_certificate,
    certificate_to_pem,
    csr_requested_sans,
    describe_certificate,
    format_name,
    format_san,
    generate_pkcs12,
    generate_private_key,
    get_profile,
    load_csr,
    parse_san,
    parse_subject,
    private_key_to_encrypted_pem,
)

from ..distribution import ca_distribution_points
from ..errors import PkiError
from ..events import PkiAction
from ..models import (
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateSource,
)
from ..queries import ca_share_lock
from ..selectors import ca_chain
from ..signers import (
    PreviewSigner,
    ca_signer,
    preview_public_key,
)
from .records import (
    DEFAULT_LEAF_KEY_TYPE,
    _certificate_of,
    _certificate_row,
    _key_type,
    _sign_with_unique_serial,
    _x509_errors,
)

#: The KMS's own certificate profile: issued only by `server_identity_certificate_issue`.
SERVER_IDENTITY_PROFILE = "kms-server"


def _refuse_reserved(ca: CertificateAuthority, profile: str, *, server_identity: bool) -> None:
    """The server-identity rule (issue 13): the deployment's server-identity CA signs the
    KMS's own `kms-server` certificate and nothing else, and no other path issues that
    profile. Clients pin that CA's key, so nothing a portal role can obtain passes for the KMS.
    Checked on the CA row as stored now, so a stale object passed in cannot get round it."""
    if server_identity:
        if not ca.server_identity or profile != SERVER_IDENTITY_PROFILE:
            raise PkiError("the server identity is issued by the server-identity CA only")
        return
    if ca.server_identity:
        raise PkiError(
            f"CA {ca.name} is this KMS's server-identity CA: it signs only the KMS's own "
            "certificate (manage.py server_cert_renew), never anything else"
        )
    if profile == SERVER_IDENTITY_PROFILE:
        raise PkiError(
            f"the {SERVER_IDENTITY_PROFILE} profile is reserved for the KMS's own certificate, "
            "which only manage.py bootstrap and server_cert_renew issue"
        )


def _issuing_ca(
    ca: CertificateAuthority, *, profile: str, lock: bool = False, server_identity: bool = False
) -> CertificateAuthority:
    """The CA as stored now; it must be active, and may issue ``profile`` (see
    `_refuse_reserved`).

    ``lock`` (inside the issuing transaction): on PostgreSQL a shared row lock (FOR SHARE)
    held until commit. Issuers of one CA still run in parallel (shared locks do not conflict),
    but a revocation of the CA (which locks its row FOR UPDATE, see `pki.revocation`) waits
    for issuances in flight and they wait for it; so an issuance can never commit a valid
    certificate under a CA whose revocation revoked "everything it issued" just before.
    SQLite serialises writing transactions anyway. A disable that commits while an issuance
    is in flight does not stop that issuance (it began first); the audit log orders both.
    """
    if lock:
        ca_share_lock(pk=ca.pk)
    fresh = CertificateAuthority.objects.get(pk=ca.pk)
    _refuse_reserved(fresh, profile, server_identity=server_identity)
    if fresh.state != CAState.ACTIVE:
        raise PkiError(
            f"CA {fresh.name} is {fresh.get_state_display()}; it cannot issue certificates"
        )
    return fresh


def _profile(name: str) -> Profile:
    with _x509_errors():
        return get_profile(name)


def _subject_from(text: str) -> x509.Name:
    """Parse an operator's subject; empty means no subject (allowed when there are SANs)."""
    if not text.strip():
        return x509.Name([])
    with _x509_errors():
        return parse_subject(text)


def _sans_from(lines: Sequence[str]) -> list[x509.GeneralName]:
    with _x509_errors():
        return [parse_san(line) for line in lines if line.strip()]


def _csr_subject_and_sans(
    csr: x509.CertificateSigningRequest,
    subject_override: str | None,
    sans_override: Sequence[str] | None,
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The CSR's subject and SANs unless the operator changed them.

    A value equal to the CSR's own (as the pages show it) keeps the CSR's exact encoding, so
    attributes the subject parser does not know survive an unchanged confirmation.
    """
    with _x509_errors():
        requested_sans = csr_requested_sans(csr)
    subject = csr.subject
    if subject_override is not None and subject_override.strip() != format_name(csr.subject):
        subject = _subject_from(subject_override)
    sans = requested_sans
    if sans_override is not None:
        wanted = [line.strip() for line in sans_override if line.strip()]
        if wanted != [format_san(n) for n in requested_sans]:
            sans = _sans_from(wanted)
    return subject, sans


def _build_leaf(
    *,
    ca: CertificateAuthority,
    signer: Signer,
    subject: x509.Name,
    public_key: PublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    days: int | None,
    serial: int | None = None,
) -> x509.Certificate:
    points = ca_distribution_points(ca.name)
    with _x509_errors():
        return build_certificate(
            subject=subject,
            public_key=public_key,
            sans=sans,
            profile=profile,
            issuer_certificate=_certificate_of(ca),
            signer=signer,
            crl_distribution_url=points.crl,
            ca_issuers_url=points.ca_issuers,
            ocsp_url=points.ocsp,
            days=days,
            serial_number=serial,
            freshest_crl_url=points.delta_crl,
        )


def _issue_leaf(
    *,
    ca: CertificateAuthority,
    signer: Signer,
    subject: x509.Name,
    public_key: PublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    days: int | None,
    source: CertificateSource,
    actor: Actor,
) -> tuple[x509.Certificate, Certificate]:
    """Sign an end-entity certificate under a fresh unique serial and store its row."""
    return _sign_with_unique_serial(
        ca=ca,
        build=lambda serial: _build_leaf(
            ca=ca,
            signer=signer,
            subject=subject,
            public_key=public_key,
            sans=sans,
            profile=profile,
            days=days,
            serial=serial,
        ),
        row=lambda certificate: _certificate_row(
            ca=ca,
            certificate=certificate,
            profile=profile.name,
            source=source,
            actor=actor,
            sans=sans,
        ),
    )


@dataclass(frozen=True)
class IssuePreview:
    """Exactly what issuance would sign (bar serial and the second of notBefore)."""

    ca: CertificateAuthority
    profile: str
    subject: str
    sans: list[str]
    days: int | None
    summary: CertificateSummary
    csr_pem: str = ""
    key_type: str = ""


def _csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(Encoding.PEM).decode("ascii")


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    with _x509_errors():
        return load_csr(data)


def certificate_csr_preview(
    *,
    ca: CertificateAuthority,
    csr_pem_or_der: bytes,
    profile: str,
    subject_override: str | None = None,
    sans_override: Sequence[str] | None = None,
    days: int | None = None,
) -> IssuePreview:
    """Check a CSR issuance and describe the certificate it would produce; changes nothing."""
    csr = _load_csr(csr_pem_or_der)
    leaf_profile = _profile(profile)
    subject, sans = _csr_subject_and_sans(csr, subject_override, sans_override)
    ca = _issuing_ca(ca, profile=leaf_profile.name)
    certificate = _build_leaf(
        ca=ca,
        signer=PreviewSigner(_certificate_of(ca).public_key()),  # type: ignore[arg-type]
        subject=subject,
        public_key=csr.public_key(),  # type: ignore[arg-type]
        sans=sans,
        profile=leaf_profile,
        days=days,
    )
    return IssuePreview(
        ca=ca,
        profile=leaf_profile.name,
        subject=format_name(subject),
        sans=[format_san(n) for n in sans],
        days=days,
        summary=describe_certificate(certificate),
        csr_pem=_csr_pem(csr),
    )


def _issued_details(record: Certificate) -> dict[str, object]:
    return {
        "ca": record.ca.name,
        "subject": record.subject,
        "sans": record.san_list,
        "serial": record.serial_number_display,
        "profile": record.profile,
        "not_after": record.not_after.isoformat(),
        "fingerprint": record.fingerprint_sha256,
        "source": record.source,
    }


def _record_issued(*, actor: Actor, record: Certificate) -> None:
    audit_event_record(
        action=PkiAction.CERTIFICATE_ISSUED,
        actor=actor,
        target=record,
        target_label=(record.subject or record.sans.partition("\n")[0])[:255],
        details=_issued_details(record),
    )


@transaction.atomic
def certificate_issue_from_csr(
    *,
    actor: Actor,
    ca: CertificateAuthority,
    csr_pem_or_der: bytes,
    profile: str,
    subject_override: str | None = None,
    sans_override: Sequence[str] | None = None,
    days: int | None = None,
) -> Certificate:
    """Sign a CSR (PEM or DER, at most 64 KiB) under ``profile`` with ``ca``.

    The CSR must verify and use an acceptable key (RSA >= 2048 bits or EC P-256/384/521)
    and hash (no SHA-1, no MD5). The operator may replace its subject and SANs
    (``subject_override``: an RFC 4514 string, empty for none; ``sans_override``: lines such
    as ``dns:www.example.org``). ``days`` defaults to the profile's maximum; validity is
    clipped to the CA's own notAfter.
    """
    return _issue_from_csr(
        actor=actor,
        ca=ca,
        csr_pem_or_der=csr_pem_or_der,
        profile=profile,
        subject_override=subject_override,
        sans_override=sans_override,
        days=days,
        server_identity=False,
    )


@transaction.atomic
def server_identity_certificate_issue(
    *, ca: CertificateAuthority, csr_pem_or_der: bytes, subject: str, sans: Sequence[str]
) -> Certificate:
    """The KMS's own `kms-server` certificate, from the server-identity CA: the one path that
    may use either (called by the vault's `server_identity_renew`, i.e. bootstrap and
    ``manage.py server_cert_renew``; no page, API or other command reaches it)."""
    return _issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem_or_der,
        profile=SERVER_IDENTITY_PROFILE,
        subject_override=subject,
        sans_override=sans,
        days=None,
        server_identity=True,
    )


def _issue_from_csr(
    *,
    actor: Actor,
    ca: CertificateAuthority,
    csr_pem_or_der: bytes,
    profile: str,
    subject_override: str | None,
    sans_override: Sequence[str] | None,
    days: int | None,
    server_identity: bool,
) -> Certificate:
    csr = _load_csr(csr_pem_or_der)
    leaf_profile = _profile(profile)
    subject, sans = _csr_subject_and_sans(csr, subject_override, sans_override)
    ca = _issuing_ca(ca, profile=leaf_profile.name, lock=True, server_identity=server_identity)
    signer = ca_signer(ca)
    public_key = csr.public_key()
    _, record = _issue_leaf(
        ca=ca,
        signer=signer,
        subject=subject,
        public_key=public_key,  # type: ignore[arg-type]
        sans=sans,
        profile=leaf_profile,
        days=days,
        source=CertificateSource.CSR,
        actor=actor,
    )
    _record_issued(actor=actor, record=record)
    return record


def certificate_generated_preview(
    *,
    ca: CertificateAuthority,
    subject: str,
    sans: Sequence[str],
    profile: str,
    days: int | None = None,
    key_type: KeyType | str = DEFAULT_LEAF_KEY_TYPE,
) -> IssuePreview:
    """Check an issuance with a server-generated key and describe the certificate; no key is
    generated and nothing changes."""
    kind = _key_type(key_type)
    leaf_profile = _profile(profile)
    name = _subject_from(subject)
    general_names = _sans_from(sans)
    ca = _issuing_ca(ca, profile=leaf_profile.name)
    certificate = _preview_generated(ca, name, general_names, leaf_profile, days, kind)
    return IssuePreview(
        ca=ca,
        profile=leaf_profile.name,
        subject=format_name(name),
        sans=[format_san(n) for n in general_names],
        days=days,
        summary=describe_certificate(certificate),
        key_type=kind.value,
    )


def _preview_generated(
    ca: CertificateAuthority,
    name: x509.Name,
    general_names: list[x509.GeneralName],
    leaf_profile: Profile,
    days: int | None,
    kind: KeyType,
) -> x509.Certificate:
    return _build_leaf(
        ca=ca,
        signer=PreviewSigner(_certificate_of(ca).public_key()),  # type: ignore[arg-type]
        subject=name,
        public_key=preview_public_key(kind),
        sans=general_names,
        profile=leaf_profile,
        days=days,
    )


@dataclass(frozen=True)
class GeneratedCredential:
    """A certificate with its freshly generated private key, handed out exactly once.

    ``pkcs12`` holds key, certificate and CA chain, encrypted under the operator's password;
    ``pem_bundle`` (when asked for) is the key as encrypted PKCS#8 PEM under the same
    password followed by the certificate and the chain. Neither is stored anywhere.
    """

    certificate: Certificate
    pkcs12: bytes
    pem_bundle: bytes | None

    @property
    def filename_stem(self) -> str:
        return f"{self.certificate.ca.name}-{self.certificate.serial_number_display}"


def _password_bytes(password: str | bytes) -> bytes:
    data = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if len(data) < MIN_EXPORT_PASSWORD_LENGTH:
        raise PkiError(
            f"the PKCS#12 password is too short; use at least {MIN_EXPORT_PASSWORD_LENGTH} "
            "characters"
        )
    return data


def certificate_issue_generated(
    *,
    actor: Actor,
    ca: CertificateAuthority,
    subject: str,
    sans: Sequence[str],
    profile: str,
    pkcs12_password: str | bytes,
    days: int | None = None,
    key_type: KeyType | str = DEFAULT_LEAF_KEY_TYPE,
    pem_bundle: bool = False,
    in_transaction: Callable[[GeneratedCredential], None] | None = None,
) -> GeneratedCredential:
    """Generate a key pair in memory, issue its certificate and return both, once, in a
    PKCS#12 protected by ``pkcs12_password`` (and optionally a PEM bundle).

    The private key is never stored, logged or audited; the audit log records the issuance
    and that a key was delivered, without the password. Input is checked before the key is
    generated; the database work is one transaction, in which ``in_transaction`` (if given)
    runs with the credential (the portal's delivery record commits with the certificate).
    """
    password = _password_bytes(pkcs12_password)
    kind = _key_type(key_type)
    leaf_profile = _profile(profile)
    name = _subject_from(subject)
    general_names = _sans_from(sans)
    # Refuse what issuance would refuse before spending time on a key.
    _preview_generated(
        _issuing_ca(ca, profile=leaf_profile.name), name, general_names, leaf_profile, days, kind
    )
    private_key = generate_private_key(kind)
    try:
        with transaction.atomic():
            credential = _issue_generated(
                actor=actor,
                ca=ca,
                private_key=private_key,
                name=name,
                general_names=general_names,
                leaf_profile=leaf_profile,
                days=days,
                password=password,
                pem_bundle=pem_bundle,
                key_type=kind,
            )
            if in_transaction is not None:
                in_transaction(credential)
            return credential
    finally:
        del private_key


def _issue_generated(
    *,
    actor: Actor,
    ca: CertificateAuthority,
    private_key: PrivateKey,
    name: x509.Name,
    general_names: list[x509.GeneralName],
    leaf_profile: Profile,
    days: int | None,
    password: bytes,
    pem_bundle: bool,
    key_type: KeyType,
) -> GeneratedCredential:
    ca = _issuing_ca(ca, profile=leaf_profile.name, lock=True)
    signer = ca_signer(ca)
    public_key = private_key.public_key()
    certificate, record = _issue_leaf(
        ca=ca,
        signer=signer,
        subject=name,
        public_key=public_key,
        sans=general_names,
        profile=leaf_profile,
        days=days,
        source=CertificateSource.GENERATED,
        actor=actor,
    )
    chain = [_certificate_of(c) for c in ca_chain(ca=ca)]
    friendly = (record.subject or record.serial_number_display)[:64].encode("utf-8")
    with _x509_errors():
        pkcs12 = generate_pkcs12(
            private_key=private_key,
            certificate=certificate,
            chain=chain,
            password=password,
            friendly_name=friendly,
        )
        bundle = None
        if pem_bundle:
            bundle = private_key_to_encrypted_pem(private_key, password) + b"".join(
                certificate_to_pem(c) for c in [certificate, *chain]
            )
    _record_issued(actor=actor, record=record)
    audit_event_record(
        action=PkiAction.CERTIFICATE_KEY_DELIVERED,
        actor=actor,
        target=record,
        target_label=(record.subject or record.serial_number_display)[:255],
        details={
            "ca": ca.name,
            "serial": record.serial_number_display,
            "fingerprint": record.fingerprint_sha256,
            "key_type": key_type.value,
            "format": "PKCS#12 and encrypted PEM" if pem_bundle else "PKCS#12",
        },
    )
    return GeneratedCredential(certificate=record, pkcs12=pkcs12, pem_bundle=bundle)
