"""Certificate authorities: plan, preview, create (root or subordinate), store, disable."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_event_record
from kmsportal.actors import Actor, actor_name
from kmsportal.crypto.profiles import SUB_CA_PROFILE_NAME
from kmsportal.crypto.signer import PublicKey, Signer
from kmsportal.crypto.x509 import (
    CLOCK_SKEW,
    DEFAULT_CA_KEY_TYPE,
    CertificateSummary,
    KeyType,
    build_ca_certificate,
    certificate_to_der,
    certificate_to_pem,
    describe_certificate,
    format_name,
    parse_subject,
)

from ..crl import crl_publish_locked
from ..distribution import DistributionPoints, ca_distribution_points
from ..errors import PkiError
from ..events import PkiAction
from ..models import (
    CA_NAME_MESSAGE,
    CA_NAME_PATTERN,
    CAState,
    CertificateAuthority,
    CertificateSource,
    CRLTrigger,
    serial_to_hex,
)
from ..signers import (
    GeneratedCAKey,
    PreviewSigner,
    ca_signer,
    ca_signer_remember,
    preview_public_key,
)
from .records import (
    DEFAULT_INTERMEDIATE_DAYS,
    DEFAULT_ROOT_DAYS,
    MAX_CA_DAYS,
    RESERVED_CA_NAMES,
    _certificate_of,
    _certificate_row,
    _fingerprint,
    _key_type,
    _sign_with_unique_serial,
    _x509_errors,
)


@dataclass(frozen=True)
class _CAPlan:
    name: str
    subject: x509.Name
    parent: CertificateAuthority | None
    key_type: KeyType
    days: int
    path_length: int | None
    # The validity is a default (not the user's choice): an intermediate's then ends with its
    # parent if the default would reach past it, decided when signing.
    end_with_parent: bool = False


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
    path_length = 0 if path_length is None else path_length
    if days is None:
        # The default never outlives the parent; an explicit choice that would is refused.
        days = max(1, min(DEFAULT_INTERMEDIATE_DAYS, _days_until(parent.not_after)))
        return _CAPlan(name, name_object, parent, kind, days, path_length, end_with_parent=True)
    return _CAPlan(name, name_object, parent, kind, days, path_length)


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
            end_with_parent=plan.end_with_parent,
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

    plan = _ca_plan(
        name=name,
        subject=subject,
        parent=parent,
        key_type=key_type,
        days=days,
        path_length=path_length,
    )
    if server_identity and parent is None:
        raise PkiError("the server-identity CA is an intermediate under the deployment's root")
    _preview_ca(plan)  # refuse what the X.509 layer would refuse before generating a key
    new_key = GeneratedCAKey(plan.key_type)
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
        plan = replace(plan, parent=parent)
    ca = CertificateAuthority(
        name=plan.name,
        subject=format_name(plan.subject),
        parent=parent,
        key_type=plan.key_type.value,
        path_length=plan.path_length,
        server_identity=server_identity,
        created_by=actor,
        created_by_name=actor_name(actor),
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
