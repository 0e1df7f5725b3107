"""Certificate building: CA and leaf certificates, serial numbers, validity and extensions."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
)

from kmsportal.crypto.profiles import (
    SAN_TYPE_LABELS,
    Profile,
)
from kmsportal.crypto.signer import PublicKey, Signer
from kmsportal.crypto.timeutil import as_utc
from kmsportal.crypto.x509.errors import IssuanceError
from kmsportal.crypto.x509.keys import public_key_problem
from kmsportal.crypto.x509.loading import get_extension
from kmsportal.crypto.x509.names import display_name, format_san, san_type

#: notBefore is backdated by this much so that clients with slightly slow clocks accept a
#: certificate right after issuance.
CLOCK_SKEW = dt.timedelta(minutes=5)

_ONE_DAY = dt.timedelta(days=1)

# --- serial numbers --------------------------------------------------------------------------


def new_serial_number() -> int:
    """A fresh certificate serial number: 159 random bits from the OS CSPRNG, never zero.

    RFC 5280 section 4.1.2.2 requires a positive integer of at most 20 octets; 159 bits keep
    the DER INTEGER within 20 octets without a sign byte. The CAB BR ask for at least 64 bits
    of CSPRNG output; 159 random bits give that with a negligible chance of collision.
    """
    while True:
        serial = int.from_bytes(os.urandom(20), "big") >> 1
        if serial > 0:
            return serial


def _check_serial(serial_number: int) -> int:
    if not 0 < serial_number < 2**159:
        raise IssuanceError("the serial number must be a positive integer of at most 159 bits")
    return serial_number


# --- certificate building --------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _whole_seconds_utc(moment: dt.datetime) -> dt.datetime:
    """Aware UTC with whole seconds (X.509 times have no fractions, RFC 5280 4.1.2.5)."""
    return as_utc(moment, naive_is_utc=False).replace(microsecond=0)


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI in key-identifier form only (RFC 5280 4.2.1.1).

    The issuer's own SKI is copied when present, so that the two always match even if the
    issuer used a different SKI method; otherwise it is computed from the issuer's key.
    Issuer name and serial are left out: they would pin the child to one issuer certificate
    and break re-issued (cross-signed or renewed) CA certificates.
    """
    ski = get_extension(issuer, x509.SubjectKeyIdentifier)
    if isinstance(ski, x509.SubjectKeyIdentifier):
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _distribution_extensions(
    *,
    crl_distribution_url: str | None,
    ca_issuers_url: str | None,
    ocsp_url: str | None,
    freshest_crl_url: str | None = None,
) -> list[x509.ExtensionType]:
    """CRL distribution point, FreshestCRL (where delta CRLs are, RFC 5280 4.2.1.15) and
    authority information access, each non-critical."""
    extensions: list[x509.ExtensionType] = []
    if crl_distribution_url:
        extensions.append(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_distribution_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            )
        )
    if freshest_crl_url:
        extensions.append(
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(freshest_crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            )
        )
    access: list[x509.AccessDescription] = []
    if ocsp_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if ca_issuers_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(ca_issuers_url),
            )
        )
    if access:
        extensions.append(x509.AuthorityInformationAccess(access))
    return extensions


def _check_issuer(issuer_certificate: x509.Certificate, signer: Signer) -> None:
    """The issuer must be a CA allowed to sign certificates, and the signer must hold its key."""
    constraints = get_extension(issuer_certificate, x509.BasicConstraints)
    if not (isinstance(constraints, x509.BasicConstraints) and constraints.ca):
        raise IssuanceError(
            f"{display_name(issuer_certificate.subject)} is not a CA certificate "
            "(basicConstraints CA:TRUE is missing), so it cannot issue certificates"
        )
    usage = get_extension(issuer_certificate, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise IssuanceError(
            f"{display_name(issuer_certificate.subject)} may not sign certificates "
            "(its key usage lacks keyCertSign)"
        )
    if signer.public_key != issuer_certificate.public_key():
        raise IssuanceError(
            "the signing key does not belong to the issuing CA certificate "
            f"{display_name(issuer_certificate.subject)}"
        )


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError("days must be an int")
    if days < 1:
        raise IssuanceError(f"the validity must be at least 1 day, not {days}")


def build_ca_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    signer: Signer,
    issuer_certificate: x509.Certificate | None,
    days: int,
    path_length: int | None,
    crl_distribution_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
    serial_number: int | None = None,
    not_before: dt.datetime | None = None,
    freshest_crl_url: str | None = None,
    end_with_parent: bool = False,
) -> x509.Certificate:
    """Build and sign a CA certificate: a self-signed root or an intermediate.

    ``issuer_certificate=None`` makes a self-signed root: ``signer`` must hold the private
    key of ``public_key``. Otherwise ``signer`` holds the issuer's key.

    Extensions: basicConstraints CA:TRUE with ``path_length`` (None = unlimited) and keyUsage
    keyCertSign + cRLSign + digitalSignature, both critical (RFC 5280 4.2.1.9, 4.2.1.3;
    digitalSignature lets the CA sign OCSP responses itself); subject key identifier;
    authority key identifier (for a root it repeats its own SKI, which RFC 5280 4.2.1.1
    permits and helps path builders); for intermediates, CRL distribution point and AIA
    (caIssuers, OCSP) pointing at the parent's services when the URLs are given.

    Validity: ``not_before`` defaults to now minus :data:`CLOCK_SKEW`; ``notAfter`` is
    ``not_before + days``. An intermediate may not outlive its parent and its path length
    must fit under the parent's: both raise :class:`IssuanceError` rather than adjusting,
    except that ``end_with_parent=True`` (a default validity, not a user's choice) ends an
    intermediate with its parent when ``days`` would reach past it.
    """
    _check_days(days)
    if len(subject) == 0:
        # RFC 5280 4.1.2.4/4.1.2.6: a CA's name becomes the issuer field, which MUST NOT be empty.
        raise IssuanceError("a CA certificate needs a subject name, e.g. CN=Example Issuing CA")
    problem = public_key_problem(public_key)
    if problem:
        raise IssuanceError(f"the CA key is {problem}")
    if path_length is not None and (isinstance(path_length, bool) or path_length < 0):
        raise IssuanceError("the path length must be 0 or more (or empty for no limit)")
    start = (
        _whole_seconds_utc(not_before)
        if not_before is not None
        else _whole_seconds_utc(_utcnow() - CLOCK_SKEW)
    )
    end = start + dt.timedelta(days=days)

    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_certificate is None:
        if signer.public_key != public_key:
            raise IssuanceError(
                "a self-signed root must be signed with its own key, but the signer holds "
                "a different key"
            )
        issuer_name = subject
        aki = x509.AuthorityKeyIdentifier(
            key_identifier=ski.digest, authority_cert_issuer=None, authority_cert_serial_number=None
        )
        # The CDP/AIA of a root would point at itself; trust anchors are not revocation-checked.
        distribution: list[x509.ExtensionType] = []
    else:
        _check_issuer(issuer_certificate, signer)
        _check_child_path_length(issuer_certificate, path_length)
        if end_with_parent:
            # A default validity: the earlier of ``days`` and the parent's notAfter, taken
            # here, at signing, so no clock tick between planning and signing can push it past.
            end = min(end, issuer_certificate.not_valid_after_utc)
        _check_within_parent(issuer_certificate, start, end)
        issuer_name = issuer_certificate.subject
        aki = _authority_key_identifier(issuer_certificate)
        distribution = _distribution_extensions(
            crl_distribution_url=crl_distribution_url,
            ca_issuers_url=ca_issuers_url,
            ocsp_url=ocsp_url,
            freshest_crl_url=freshest_crl_url,
        )

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(
            new_serial_number() if serial_number is None else _check_serial(serial_number)
        )
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)  # RFC 5280 4.2.1.1: MUST be non-critical
    )
    for extension in distribution:
        builder = builder.add_extension(extension, critical=False)
    return signer.sign_certificate(builder)


def _check_child_path_length(parent: x509.Certificate, path_length: int | None) -> None:
    """RFC 5280 4.2.1.9: a CA with pathLenConstraint n allows at most n CAs below it."""
    constraints = get_extension(parent, x509.BasicConstraints)
    parent_limit = (
        constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None
    )
    if parent_limit is None:
        return
    parent_name = display_name(parent.subject)
    if parent_limit == 0:
        raise IssuanceError(
            f"the parent CA {parent_name} has path length 0, so it cannot issue intermediate "
            "CA certificates; it can only issue end-entity certificates"
        )
    if path_length is None or path_length >= parent_limit:
        chosen = "no limit" if path_length is None else str(path_length)
        raise IssuanceError(
            f"the path length ({chosen}) must be less than the parent CA's path length "
            f"({parent_limit}); choose at most {parent_limit - 1}"
        )


def _check_within_parent(parent: x509.Certificate, start: dt.datetime, end: dt.datetime) -> None:
    parent_end = parent.not_valid_after_utc
    if parent_end <= start:
        raise IssuanceError(
            f"the parent CA {display_name(parent.subject)} expired on "
            f"{_format_time(parent_end)}; it cannot issue certificates"
        )
    if end > parent_end:
        max_days = (parent_end - start) // _ONE_DAY
        advice = (
            f"choose at most {max_days} days"
            if max_days >= 1
            else "the parent expires in less than a day; renew the parent CA first"
        )
        raise IssuanceError(
            f"the intermediate would expire on {_format_time(end)}, after its parent CA "
            f"(expires {_format_time(parent_end)}); {advice}"
        )


def _leaf_key_usage(profile: Profile, public_key: PublicKey) -> x509.KeyUsage:
    flags = profile.key_usage_kwargs()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        # RFC 8813 section 3: keyEncipherment and dataEncipherment MUST NOT be set for
        # id-ecPublicKey. EC keys encrypt through ECDH, i.e. keyAgreement; that is what S/MIME
        # encryption (RFC 8551, RFC 5753) needs, while TLS (ECDHE) needs only digitalSignature.
        wanted_encryption = flags["key_encipherment"] or flags["data_encipherment"]
        flags["key_encipherment"] = flags["data_encipherment"] = False
        if wanted_encryption and ExtendedKeyUsageOID.EMAIL_PROTECTION in profile.extended_key_usage:
            flags["key_agreement"] = True
    return x509.KeyUsage(**flags)


def _check_sans(sans: Sequence[x509.GeneralName], profile: Profile) -> None:
    for general_name in sans:
        kind = san_type(general_name)
        if kind is not None and kind in profile.allowed_san_types:
            continue
        if not profile.allowed_san_types:
            raise IssuanceError(
                f"the {profile.name} profile does not allow subject alternative names "
                f"(got {format_san(general_name)})"
            )
        what = "this kind of SAN"
        if kind is not None:
            label = SAN_TYPE_LABELS[kind]
            what = label + ("es" if label.endswith("ss") else "s") + " as SAN"
        raise IssuanceError(
            f"the {profile.name} profile does not allow {what} ({format_san(general_name)}); "
            f"allowed: {profile.describe_san_types()}"
        )
    if profile.san_required and not sans:
        raise IssuanceError(
            f"the {profile.name} profile requires at least one subject alternative name "
            f"({profile.describe_san_types()})"
        )
    if len(set(sans)) != len(sans):
        raise IssuanceError("a subject alternative name is listed twice")


def build_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    issuer_certificate: x509.Certificate,
    signer: Signer,
    crl_distribution_url: str,
    ca_issuers_url: str,
    ocsp_url: str,
    days: int | None = None,
    serial_number: int | None = None,
    now: dt.datetime | None = None,
    freshest_crl_url: str | None = None,
) -> x509.Certificate:
    """Build and sign an end-entity certificate under ``profile``.

    Checks, each raising :class:`IssuanceError`: the key is RSA >= 2048 bits or EC on
    P-256/P-384/P-521; every SAN type is allowed by the profile and a required SAN is present;
    ``days`` (default: the profile maximum) does not exceed the profile maximum; the subject or
    the SANs identify someone; the issuer is a CA whose key the signer holds.

    Validity starts at ``now`` (default: the current time) minus :data:`CLOCK_SKEW` and lasts
    ``days``, **clipped to the issuer's notAfter**: a leaf cannot be valid longer than its CA,
    and unlike for intermediates, a shorter leaf is harmless, so it is shortened silently.

    Extensions: basicConstraints CA:FALSE and keyUsage (both critical), extendedKeyUsage,
    SAN (critical only when the subject is empty, RFC 5280 4.2.1.6), SKI, AKI, CRL
    distribution point, AIA (caIssuers and OCSP; no OCSP pointer in an OCSP responder's own
    certificate, which carries id-pkix-ocsp-nocheck instead).
    """
    problem = public_key_problem(public_key)
    if problem:
        raise IssuanceError(f"the certificate's public key is {problem}")
    sans = list(sans)
    _check_sans(sans, profile)
    if len(subject) == 0 and not sans:
        raise IssuanceError("the certificate needs a subject name or a subject alternative name")
    if days is None:
        days = profile.max_validity_days
    _check_days(days)
    if days > profile.max_validity_days:
        raise IssuanceError(
            f"the {profile.name} profile allows at most {profile.max_validity_days} days; "
            f"{days} days were requested"
        )
    _check_issuer(issuer_certificate, signer)

    start = _whole_seconds_utc((now if now is not None else _utcnow()) - CLOCK_SKEW)
    issuer_end = issuer_certificate.not_valid_after_utc
    if issuer_end <= start:
        raise IssuanceError(
            f"the issuing CA {display_name(issuer_certificate.subject)} expired on "
            f"{_format_time(issuer_end)}; it cannot issue certificates"
        )
    # RFC 5280 4.1.2.5 counts notAfter inclusively: N days end one second before N * 24 h.
    end = min(start + dt.timedelta(days=days) - dt.timedelta(seconds=1), issuer_end)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(
            new_serial_number() if serial_number is None else _check_serial(serial_number)
        )
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(profile, public_key), critical=True)
        # Non-critical EKU: the usual choice (CAB BR 7.1.2.7); RFC 5280 4.2.1.12 allows both.
        .add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer_certificate), critical=False)
    )
    if sans:
        # RFC 5280 4.2.1.6: if the subject is empty, the SAN extension MUST be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    for extension in _distribution_extensions(
        crl_distribution_url=crl_distribution_url,
        ca_issuers_url=ca_issuers_url,
        ocsp_url=None if profile.ocsp_no_check else ocsp_url,
        freshest_crl_url=freshest_crl_url,
    ):
        builder = builder.add_extension(extension, critical=False)
    if profile.ocsp_no_check:
        # RFC 6960 4.2.2.2.1: clients trust this responder certificate for its lifetime.
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return signer.sign_certificate(builder)
