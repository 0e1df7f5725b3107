"""PKI services: certificate authorities, issuance (from a CSR or a generated key pair) and
certificate validation. Revocation and CRL publication live in `pki.revocation` and
`pki.crl` and are re-exported here (`certificate_revoke`, `certificate_release`,
`crl_publish`), so callers import services from one place.

Every state-changing service is one transaction that records its audit event last (see
audit.services: lock order). Audit details name what was done (CA, subject, serial, profile,
fingerprint), never a key or a password.

Private keys: a CA's key is generated, sealed and loaded only by `pki.signers`; the key of a
server-generated key pair lives in memory for the one call that returns it inside a
password-protected PKCS#12, and is never stored.

Key generation runs before the transaction opens: an RSA-3072 key takes ~330 ms (and far
more at times), and a transaction on SQLite holds the database's write lock from its first
statement. Cheap input checks run before key generation so that bad input costs nothing.

Every certificate is built by `kmsportal.crypto.x509`, also for the confirmation pages (with
`pki.signers.PreviewSigner`), so what a confirmation page shows passed the same checks as the
issuance that follows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.services import audit_event_record
from kmsportal.crypto.profiles import SUB_CA_PROFILE_NAME, Profile, ProfileError
from kmsportal.crypto.signer import PrivateKey, PublicKey, Signer
from kmsportal.crypto.validation import (
    RevocationStatus,
    ValidationReport,
    validate_certificate_data,
)
from kmsportal.crypto.x509 import (
    CLOCK_SKEW,
    DEFAULT_CA_KEY_TYPE,
    MIN_EXPORT_PASSWORD_LENGTH,
    CertificateSummary,
    KeyType,
    X509Error,
    build_ca_certificate,
    build_certificate,
    certificate_to_der,
    certificate_to_pem,
    csr_requested_sans,
    describe_certificate,
    describe_public_key,
    format_name,
    format_san,
    generate_pkcs12,
    generate_private_key,
    get_profile,
    load_csr,
    new_serial_number,
    parse_san,
    parse_subject,
    private_key_to_encrypted_pem,
)

from .crl import crl_publish, crl_publish_locked
from .distribution import DistributionPoints, ca_distribution_points
from .errors import PkiError
from .events import PkiAction
from .models import (
    CA_NAME_MESSAGE,
    CA_NAME_PATTERN,
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateSource,
    CertificateStatus,
    CRLTrigger,
    serial_to_hex,
)
from .revocation import (
    REVOCATION_REASONS,
    certificate_by_serial,
    certificate_release,
    certificate_revocation_preview,
    certificate_revoke,
)
from .selectors import ca_chain
from .signers import (
    GeneratedCAKey,
    PreviewSigner,
    ca_signer,
    ca_signer_remember,
    preview_public_key,
)

__all__ = [
    "DEFAULT_INTERMEDIATE_DAYS",
    "DEFAULT_LEAF_KEY_TYPE",
    "DEFAULT_ROOT_DAYS",
    "PURPOSES",
    "REVOCATION_REASONS",
    "CAPreview",
    "GeneratedCredential",
    "IssuePreview",
    "PkiError",
    "ValidationOutcome",
    "ca_distribution_points",
    "certificate_authority_create",
    "certificate_authority_disable",
    "certificate_authority_preview",
    "certificate_by_serial",
    "certificate_csr_preview",
    "certificate_generated_preview",
    "certificate_issue_from_csr",
    "certificate_issue_generated",
    "certificate_release",
    "certificate_revocation_preview",
    "certificate_revoke",
    "certificate_validate",
    "crl_publish",
]

Actor = User | None

DEFAULT_ROOT_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 1825
#: Key type of server-generated leaf key pairs: RSA-2048 opens everywhere PKCS#12 is read.
DEFAULT_LEAF_KEY_TYPE = KeyType.rsa2048
MAX_CA_DAYS = 36500
# Path segments of the CA pages that can never be CA names.
RESERVED_CA_NAMES = frozenset({"new"})
# A duplicate serial means 159 random bits collided; a few tries settle it for good.
_SERIAL_ATTEMPTS = 5
PURPOSES = ("server", "client", "any")


def _actor_name(actor: Actor) -> str:
    return actor.get_username() if actor is not None else "system"


@contextmanager
def _x509_errors() -> Iterator[None]:
    """The X.509 layer's user-facing errors become PkiError with the same message."""
    try:
        yield
    except (X509Error, ProfileError) as exc:
        raise PkiError(str(exc)) from None


def _key_type(value: KeyType | str) -> KeyType:
    try:
        return KeyType(value)
    except ValueError:
        choices = ", ".join(k.value for k in KeyType)
        raise PkiError(f"unknown key type {value!r}; choose one of {choices}") from None


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


def _certificate_of(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_der_x509_certificate(bytes(ca.certificate_der))


# --- serial numbers and certificate rows ---------------------------------------------------


def _certificate_row(
    *,
    ca: CertificateAuthority,
    certificate: x509.Certificate,
    profile: str,
    source: CertificateSource,
    actor: Actor,
    sans: Sequence[x509.GeneralName],
) -> Certificate:
    der = certificate_to_der(certificate)
    return Certificate(
        ca=ca,
        serial_hex=serial_to_hex(certificate.serial_number),
        subject=format_name(certificate.subject),
        sans="\n".join(format_san(n) for n in sans),
        profile=profile,
        public_key=describe_public_key(certificate.public_key()),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=certificate_to_pem(certificate).decode("ascii"),
        certificate_der=der,
        fingerprint_sha256=_fingerprint(der),
        status=CertificateStatus.VALID,
        source=source,
        issued_by=actor,
        issued_by_name=_actor_name(actor),
        issued_at=timezone.now(),
    )


def _sign_with_unique_serial(
    *,
    ca: CertificateAuthority,
    build: Callable[[int], x509.Certificate],
    row: Callable[[x509.Certificate], Certificate],
) -> tuple[x509.Certificate, Certificate]:
    """Sign with a fresh random serial and insert the row; on a duplicate serial for this CA,
    sign again with another one.

    Uniqueness is the database's job (constraint pki_certificate_serial), not a check before
    the insert, which two concurrent issuers could both pass. The insert runs in a savepoint,
    so a duplicate rolls back only itself. On PostgreSQL a concurrent insert of the same
    serial waits for the other transaction and fails only if that one commits.
    """
    for _ in range(_SERIAL_ATTEMPTS):
        certificate = build(new_serial_number())
        record = row(certificate)
        try:
            with transaction.atomic():
                record.save(force_insert=True)
        except IntegrityError:
            if Certificate.objects.filter(ca=ca, serial_hex=record.serial_hex).exists():
                continue
            raise
        return certificate, record
    raise PkiError(
        f"no unused serial number was found for CA {ca.name} in {_SERIAL_ATTEMPTS} attempts; "
        "the random number generator may be broken"
    )


# --- certificate authorities ---------------------------------------------------------------


@dataclass(frozen=True)
class _CAPlan:
    name: str
    subject: x509.Name
    parent: CertificateAuthority | None
    key_type: KeyType
    days: int
    path_length: int | None


def _days_until(moment: datetime) -> int:
    """Whole days from a certificate's notBefore if signed now (as the X.509 layer sets it:
    now minus the clock skew, whole seconds) until ``moment``."""
    start = (timezone.now() - CLOCK_SKEW).replace(microsecond=0)
    return (moment - start) // timedelta(days=1)


def _ca_plan(
    *,
    name: str,
    subject: str,
    parent: CertificateAuthority | None,
    key_type: KeyType | str,
    days: int | None,
    path_length: int | None,
) -> _CAPlan:
    """Check what can be checked without a key; raises PkiError naming the problem."""
    if not re.fullmatch(CA_NAME_PATTERN, name or ""):
        raise PkiError(f"the CA name {name!r} is not valid: {CA_NAME_MESSAGE}")
    if name in RESERVED_CA_NAMES:
        raise PkiError(f"{name!r} is a reserved word and cannot name a CA")
    if name.endswith("-delta"):
        # /pki/crl/<ca>-delta.crl is the delta CRL of <ca>.
        raise PkiError(f"a CA name may not end in -delta ({name!r}): that names delta CRLs")
    if CertificateAuthority.objects.filter(name=name).exists():
        raise PkiError(f"a CA named {name!r} already exists")
    kind = _key_type(key_type)
    with _x509_errors():
        name_object = parse_subject(subject)
    formatted = format_name(name_object)
    if CertificateAuthority.objects.filter(subject=formatted).exists():
        raise PkiError(
            f"a CA with the subject {formatted!r} already exists; relying parties find issuers "
            "by subject name, so every CA needs its own"
        )
    if days is not None and not 1 <= days <= MAX_CA_DAYS:
        raise PkiError(f"the validity must be between 1 and {MAX_CA_DAYS} days, not {days}")
    if path_length is not None and not 0 <= path_length <= 10:
        raise PkiError("the path length must be between 0 and 10 (or empty for the default)")
    if parent is None:
        return _CAPlan(name, name_object, None, kind, days or DEFAULT_ROOT_DAYS, path_length)
    parent = CertificateAuthority.objects.defer("sealed_private_key").get(pk=parent.pk)
    if parent.server_identity:
        raise PkiError(
            f"CA {parent.name} is this KMS's server-identity CA: it signs only the KMS's own "
            "certificate, never an intermediate CA"
        )
    if parent.state != CAState.ACTIVE:
        raise PkiError(
            f"the parent CA {parent.name} is {parent.get_state_display()}; only an active CA "
            "can sign an intermediate"
        )
    if days is None:
        # The default never outlives the parent; an explicit choice that would is refused.
        days = max(1, min(DEFAULT_INTERMEDIATE_DAYS, _days_until(parent.not_after)))
    return _CAPlan(name, name_object, parent, kind, days, 0 if path_length is None else path_length)


def _build_ca(
    plan: _CAPlan, *, public_key: PublicKey, signer: Signer, serial: int | None = None
) -> x509.Certificate:
    parent_certificate = None
    points = DistributionPoints(crl="", ca_issuers="", ocsp="")
    if plan.parent is not None:
        parent_certificate = _certificate_of(plan.parent)
        points = ca_distribution_points(plan.parent.name)
    with _x509_errors():
        return build_ca_certificate(
            subject=plan.subject,
            public_key=public_key,
            signer=signer,
            issuer_certificate=parent_certificate,
            days=plan.days,
            path_length=plan.path_length,
            crl_distribution_url=points.crl or None,
            ca_issuers_url=points.ca_issuers or None,
            ocsp_url=points.ocsp or None,
            serial_number=serial,
            freshest_crl_url=points.delta_crl or None,
        )


@dataclass(frozen=True)
class CAPreview:
    """What creating the CA would make: shown on the confirmation page."""

    name: str
    subject: str
    parent: CertificateAuthority | None
    key_type: KeyType
    days: int
    path_length: int | None
    summary: CertificateSummary


def certificate_authority_preview(
    *,
    name: str,
    subject: str,
    parent: CertificateAuthority | None = None,
    key_type: KeyType | str = DEFAULT_CA_KEY_TYPE,
    days: int | None = None,
    path_length: int | None = None,
) -> CAPreview:
    """Check a CA request and describe the certificate it would get; changes nothing."""
    plan = _ca_plan(
        name=name,
        subject=subject,
        parent=parent,
        key_type=key_type,
        days=days,
        path_length=path_length,
    )
    return CAPreview(
        name=plan.name,
        subject=format_name(plan.subject),
        parent=plan.parent,
        key_type=plan.key_type,
        days=plan.days,
        path_length=plan.path_length,
        summary=describe_certificate(_preview_ca(plan)),
    )


def _preview_ca(plan: _CAPlan) -> x509.Certificate:
    """The CA certificate ``plan`` would get, signed by a throwaway key: every check of the
    X.509 layer (validity within the parent, path length) runs without the real key."""
    public_key = preview_public_key(plan.key_type)
    issuer_key = public_key if plan.parent is None else _certificate_of(plan.parent).public_key()
    return _build_ca(plan, public_key=public_key, signer=PreviewSigner(issuer_key))  # type: ignore[arg-type]


def certificate_authority_create(
    *,
    actor: Actor,
    name: str,
    subject: str,
    parent: CertificateAuthority | None = None,
    key_type: KeyType | str = DEFAULT_CA_KEY_TYPE,
    days: int | None = None,
    path_length: int | None = None,
    server_identity: bool = False,
) -> CertificateAuthority:
    """Create a CA: a self-signed root (``parent=None``) or an intermediate signed by the
    active CA ``parent``. ``server_identity`` marks the deployment's server-identity CA (an
    intermediate; only the vault's bootstrap asks for it, and there is at most one).

    The key (default RSA-3072) is generated here, sealed with AAD naming the new CA row, and
    its signer kept for this process. Defaults: 3650 days for a root, 1825 for an
    intermediate (never past its parent); path length unlimited for a root, 0 for an
    intermediate (it issues end-entity certificates only). An intermediate that would
    outlive its parent, or whose path length does not fit under it, is refused.
    """

    def planned() -> _CAPlan:
        return _ca_plan(
            name=name,
            subject=subject,
            parent=parent,
            key_type=key_type,
            days=days,
            path_length=path_length,
        )

    plan = planned()
    if server_identity and parent is None:
        raise PkiError("the server-identity CA is an intermediate under the deployment's root")
    _preview_ca(plan)  # refuse what the X.509 layer would refuse before generating a key
    new_key = GeneratedCAKey(plan.key_type)
    if days is None and parent is not None:
        # The default validity counts from notBefore, taken when signing: count again now
        # that the key exists (making it, in a PKCS#11 token, can take seconds).
        plan = planned()
    with transaction.atomic():
        ca = _ca_create(actor=actor, plan=plan, new_key=new_key, server_identity=server_identity)
    return ca


def _sign_sub_ca(
    *,
    parent: CertificateAuthority,
    actor: Actor,
    build: Callable[[int], x509.Certificate],
) -> x509.Certificate:
    """Sign an intermediate's certificate under ``parent`` with a unique serial, recorded in
    the parent's list of issued certificates (profile sub-ca)."""
    certificate, _ = _sign_with_unique_serial(
        ca=parent,
        build=build,
        row=lambda cert: _certificate_row(
            ca=parent,
            certificate=cert,
            profile=SUB_CA_PROFILE_NAME,
            source=CertificateSource.CA,
            actor=actor,
            sans=[],
        ),
    )
    return certificate


def _ca_certificate_set(ca: CertificateAuthority, certificate: x509.Certificate) -> None:
    """Put ``certificate`` on the CA row (not saved): DER, PEM, serial, fingerprint, validity."""
    der = certificate_to_der(certificate)
    ca.certificate_der = der
    ca.certificate_pem = certificate_to_pem(certificate).decode("ascii")
    ca.serial_hex = serial_to_hex(certificate.serial_number)
    ca.fingerprint_sha256 = _fingerprint(der)
    ca.not_before = certificate.not_valid_before_utc
    ca.not_after = certificate.not_valid_after_utc


def _ca_create(
    *, actor: Actor, plan: _CAPlan, new_key: GeneratedCAKey, server_identity: bool = False
) -> CertificateAuthority:
    parent = None
    if plan.parent is not None:
        # Lock the parent: a disable committed meanwhile is seen, and waits for this.
        parent = CertificateAuthority.objects.select_for_update().get(pk=plan.parent.pk)
        if parent.server_identity:
            raise PkiError(f"CA {parent.name} is the server-identity CA; it signs no CA")
        if parent.state != CAState.ACTIVE:
            raise PkiError(f"the parent CA {parent.name} is {parent.get_state_display()}")
        plan = _CAPlan(plan.name, plan.subject, parent, plan.key_type, plan.days, plan.path_length)
    ca = CertificateAuthority(
        name=plan.name,
        subject=format_name(plan.subject),
        parent=parent,
        key_type=plan.key_type.value,
        path_length=plan.path_length,
        server_identity=server_identity,
        created_by=actor,
        created_by_name=_actor_name(actor),
    )
    ca.sealed_private_key = new_key.seal(aad=ca.aad)

    if parent is None:
        certificate = _build_ca(plan, public_key=new_key.public_key, signer=new_key.signer)
    else:
        parent_signer = ca_signer(parent)
        certificate = _sign_sub_ca(
            parent=parent,
            actor=actor,
            build=lambda serial: _build_ca(
                plan, public_key=new_key.public_key, signer=parent_signer, serial=serial
            ),
        )
    return _ca_store(
        ca=ca,
        certificate=certificate,
        actor=actor,
        signer=new_key.signer,
        action=PkiAction.CA_CREATED,
        extra_details={"server_identity": True} if server_identity else {},
    )


def _ca_store(
    *,
    ca: CertificateAuthority,
    certificate: x509.Certificate,
    actor: Actor,
    signer: Signer,
    action: PkiAction,
    extra_details: dict[str, object],
) -> CertificateAuthority:
    """Insert a new CA row (created or imported) with its certificate, publish its first
    CRL, record ``action`` and keep its signer for this process."""
    _ca_certificate_set(ca, certificate)
    try:
        with transaction.atomic():
            ca.save(force_insert=True)
    except IntegrityError:
        # Two administrators chose the same name at the same moment.
        raise PkiError(f"a CA named {ca.name!r} already exists") from None
    # Its first (empty) CRL, in the same transaction: the CRL address written into every
    # certificate the CA will sign never answers 404. Covered by the CA's event.
    crl_publish_locked(ca=ca, trigger=CRLTrigger.CA_CREATED, actor=actor, signer=signer)
    audit_event_record(
        action=action,
        actor=actor,
        target=ca,
        target_label=ca.name,
        details={
            "name": ca.name,
            "subject": ca.subject,
            "parent": ca.parent.name if ca.parent else None,
            "key_type": ca.key_type,
            "serial": ca.serial_number_display,
            "not_after": ca.not_after.isoformat(),
            "path_length": ca.path_length,
            "fingerprint": ca.fingerprint_sha256,
            **extra_details,
        },
    )
    transaction.on_commit(lambda: ca_signer_remember(ca, signer))
    return ca


@transaction.atomic
def certificate_authority_disable(
    *, actor: Actor, ca: CertificateAuthority, reason: str = ""
) -> CertificateAuthority:
    """Stop ``ca`` from issuing. Its certificate and everything it issued stay valid (that
    is revocation, a separate action); its CRL and OCSP keep being served."""
    ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    if ca.state != CAState.ACTIVE:
        raise PkiError(
            f"CA {ca.name} is {ca.get_state_display()}; only an active CA can be disabled"
        )
    ca.state = CAState.DISABLED
    ca.disabled_at = timezone.now()
    ca.save(update_fields=["state", "disabled_at", "updated_at"])
    audit_event_record(
        action=PkiAction.CA_DISABLED,
        actor=actor,
        target=ca,
        target_label=ca.name,
        details={"name": ca.name, "subject": ca.subject, "reason": reason.strip()[:1000]},
    )
    return ca


# --- issuance --------------------------------------------------------------------------------


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
    if lock and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {CertificateAuthority._meta.db_table} WHERE id = %s FOR SHARE",  # noqa: S608 - table name from the model
                [ca.pk],
            )
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


# --- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathEntry:
    subject: str
    ca_name: str | None  # the name of our CA with this certificate, if it is one


@dataclass(frozen=True)
class ValidationOutcome:
    """A validation report with what the pages show around it."""

    report: ValidationReport
    leaf: CertificateSummary | None  # None when the input could not be read or described
    issued_here: Certificate | None
    path: list[PathEntry]
    purpose: str
    hostname: str | None


def _database_status(certificate: x509.Certificate) -> RevocationStatus | None:
    """What our database says about a certificate one of our CAs issued (None: not ours)."""
    fingerprint = _fingerprint(certificate_to_der(certificate))
    row = (
        Certificate.objects.filter(fingerprint_sha256=fingerprint)
        .only("status", "revocation_reason", "revoked_at")
        .first()
    )
    if row is not None:
        if row.status != CertificateStatus.REVOKED:
            return RevocationStatus("good")
        try:
            reason = x509.ReasonFlags(row.revocation_reason) if row.revocation_reason else None
        except ValueError:
            reason = None
        return RevocationStatus("revoked", reason=reason, revoked_at=row.revoked_at)
    ca = CertificateAuthority.objects.filter(fingerprint_sha256=fingerprint).only("state").first()
    if ca is not None:
        if ca.state == CAState.REVOKED:
            return RevocationStatus("revoked", revoked_at=ca.revoked_at)
        return RevocationStatus("good")
    return None


def certificate_validate(
    *,
    actor: Actor,
    pem_data: bytes,
    chain_pem: bytes | None = None,
    purpose: str = "any",
    hostname: str | None = None,
) -> ValidationOutcome:
    """Validate a certificate (PEM or DER) for ``purpose`` ("server", "client", "any") and
    optionally ``hostname``, against the roots of this PKI.

    Every check is reported (decoding, path to one of our roots, signatures, validity, basic
    constraints, name constraints, critical extensions, algorithms, key usage and EKU,
    hostname, revocation status from our database). Our own intermediates are available to
    the path builder, so a chain is optional. Any bytes give a report: input that is not a
    certificate fails the decoding check. Changes nothing and is not audited; ``actor``
    must be allowed to read certificates.
    """
    if actor is not None and not actor.has_perm("pki.view_certificate"):
        raise PkiError("validating certificates needs the pki.view_certificate permission")
    if purpose not in PURPOSES:
        raise PkiError(f"unknown purpose {purpose!r}; choose server, client or any")
    roots: list[x509.Certificate] = []
    ours: list[x509.Certificate] = []
    names: dict[str, str] = {}
    for name, parent_id, der, state in CertificateAuthority.objects.values_list(
        "name", "parent_id", "certificate_der", "state"
    ):
        certificate = x509.load_der_x509_certificate(bytes(der))
        names[_fingerprint(bytes(der))] = name
        if parent_id is None:
            # A revoked root is no longer a trust anchor.
            if state != CAState.REVOKED:
                roots.append(certificate)
        else:
            ours.append(certificate)
    host = (hostname or "").strip() or None
    report, leaf = validate_certificate_data(
        certificate=pem_data,
        chain=chain_pem,
        trust_roots=roots,
        extra_intermediates=ours,
        purpose=purpose,  # type: ignore[arg-type]
        hostname=host,
        is_revoked=_database_status,
    )
    path = [
        PathEntry(
            subject=format_name(c.subject) or "(empty subject)",
            ca_name=names.get(_fingerprint(certificate_to_der(c))),
        )
        for c in report.path
    ]
    if leaf is None:
        return ValidationOutcome(
            report=report, leaf=None, issued_here=None, path=path, purpose=purpose, hostname=host
        )
    issued_here = (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .filter(fingerprint_sha256=_fingerprint(certificate_to_der(leaf)))
        .first()
    )
    try:
        summary = describe_certificate(leaf)
    except Exception:  # a certificate too malformed to describe is still reported on
        summary = None
    return ValidationOutcome(
        report=report,
        leaf=summary,
        issued_here=issued_here,
        path=path,
        purpose=purpose,
        hostname=host,
    )
