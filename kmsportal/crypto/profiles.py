"""Certificate profiles: what an end-entity certificate of each kind may contain.

A profile fixes the key usage, extended key usage, the longest validity and which subject
alternative name (SAN) types are allowed or required. :func:`kmsportal.crypto.x509.build_certificate`
applies a profile; the profile itself is plain data so that forms can list and describe it.

Every leaf profile gets ``basicConstraints CA:FALSE`` (critical) and a critical ``keyUsage``
(RFC 5280 section 4.2.1.3: "conforming CAs SHOULD mark this extension as critical"). CA
certificates (``sub-ca``) are not a :class:`Profile`; they are built by
:func:`kmsportal.crypto.x509.build_ca_certificate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from .errors import KMSError

__all__ = [
    "KEY_USAGE_FLAGS",
    "PROFILES",
    "SAN_TYPES",
    "SAN_TYPE_LABELS",
    "SUB_CA_PROFILE_NAME",
    "TLS_SERVER_DEFAULT_DAYS",
    "Profile",
    "ProfileError",
    "configure_tls_server_days",
    "get_profile",
]

#: SAN types a profile can allow, in the syntax of :func:`kmsportal.crypto.x509.parse_san`.
SAN_TYPES: frozenset[str] = frozenset({"dns", "ip", "email", "uri"})

#: Human-readable names of the SAN types, for messages.
SAN_TYPE_LABELS: Mapping[str, str] = MappingProxyType(
    {"dns": "DNS name", "ip": "IP address", "email": "email address", "uri": "URI"}
)

#: The keyword arguments of ``cryptography.x509.KeyUsage`` (RFC 5280 section 4.2.1.3 bits).
KEY_USAGE_FLAGS: tuple[str, ...] = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)

#: Name under which CA certificates appear in the UI; built by ``build_ca_certificate``.
SUB_CA_PROFILE_NAME = "sub-ca"


class ProfileError(KMSError, ValueError):
    """An unknown profile name was asked for."""

    code = "unknown_profile"
    status = 400


@dataclass(frozen=True)
class Profile:
    """What a leaf certificate issued under this profile contains.

    ``key_usage`` maps ``KeyUsage`` keyword names (see :data:`KEY_USAGE_FLAGS`) to ``True``;
    flags not named are false. ``allowed_san_types`` is a subset of :data:`SAN_TYPES`;
    ``san_required`` means at least one SAN of an allowed type must be present.
    ``ocsp_no_check`` adds ``id-pkix-ocsp-nocheck`` (RFC 6960 section 4.2.2.2.1).
    """

    name: str
    key_usage: Mapping[str, bool]
    extended_key_usage: tuple[ObjectIdentifier, ...]
    max_validity_days: int
    allowed_san_types: frozenset[str]
    san_required: bool
    description: str = ""
    ocsp_no_check: bool = False

    def __post_init__(self) -> None:
        unknown_flags = set(self.key_usage) - set(KEY_USAGE_FLAGS)
        if unknown_flags:
            raise ValueError(
                f"profile {self.name}: unknown key usage flags {sorted(unknown_flags)}"
            )
        unknown_sans = self.allowed_san_types - SAN_TYPES
        if unknown_sans:
            raise ValueError(f"profile {self.name}: unknown SAN types {sorted(unknown_sans)}")
        if self.san_required and not self.allowed_san_types:
            raise ValueError(f"profile {self.name}: a SAN is required but no SAN type is allowed")
        if self.max_validity_days < 1:
            raise ValueError(f"profile {self.name}: max_validity_days must be positive")
        # Freeze the mapping so that a shared registry entry cannot be changed by a caller.
        object.__setattr__(self, "key_usage", MappingProxyType(dict(self.key_usage)))
        object.__setattr__(self, "extended_key_usage", tuple(self.extended_key_usage))

    def __hash__(self) -> int:
        # The generated hash would fail on the key-usage mapping; profile names are unique.
        return hash(self.name)

    def key_usage_kwargs(self) -> dict[str, bool]:
        """All nine ``KeyUsage`` keyword arguments, false unless the profile sets them."""
        return {flag: bool(self.key_usage.get(flag, False)) for flag in KEY_USAGE_FLAGS}

    def describe_san_types(self) -> str:
        """The allowed SAN types in words, e.g. "DNS name or IP address"."""
        labels = [
            SAN_TYPE_LABELS[t] for t in ("dns", "ip", "email", "uri") if t in self.allowed_san_types
        ]
        if not labels:
            return "none"
        if len(labels) == 1:
            return labels[0]
        return ", ".join(labels[:-1]) + " or " + labels[-1]


# Validity is counted inclusively (RFC 5280 4.1.2.5: notBefore and notAfter both belong to the
# period), so a certificate of N days has notAfter = notBefore + N days - 1 second.
#
# TLS server certificates: the CA/Browser Forum Baseline Requirements allow at most 200 days
# since 15 March 2026 (100 from March 2027, 47 from March 2029, ballot SC-081). The default
# follows today's rule; ``configure_tls_server_days`` (the KMS_TLS_SERVER_MAX_DAYS setting)
# lowers it, or raises it up to 398 days for a private PKI whose clients do not apply the BRs.
TLS_SERVER_DEFAULT_DAYS = 200
TLS_SERVER_LIMIT_DAYS = 398
# Other TLS profiles (client authentication, the KMS's own mutual TLS): the older 397 days.
_TLS_DAYS = 397
# S/MIME and code signing: the older 825-day limit, a common private-PKI choice.
_LONG_DAYS = 825

_REGISTRY: dict[str, Profile] = dict(
    {
        p.name: p
        for p in (
            Profile(
                name="tls-server",
                description="TLS server (web server, API endpoint)",
                # keyEncipherment is for RSA key transport (TLS 1.2 RSA kex); it is dropped
                # for EC keys at issuance (RFC 8813 section 3).
                key_usage={"digital_signature": True, "key_encipherment": True},
                extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
                max_validity_days=TLS_SERVER_DEFAULT_DAYS,
                allowed_san_types=frozenset({"dns", "ip"}),
                # Clients match host names against SANs only (RFC 6125 / CAB BR); never CN.
                san_required=True,
            ),
            Profile(
                name="tls-client",
                description="TLS client authentication (users, devices)",
                key_usage={"digital_signature": True},
                extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                max_validity_days=_TLS_DAYS,
                allowed_san_types=frozenset({"dns", "email", "uri"}),
                san_required=False,
            ),
            Profile(
                name="kms-client",
                description="Client of this KMS (mutual TLS)",
                key_usage={"digital_signature": True},
                extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                max_validity_days=_TLS_DAYS,
                allowed_san_types=frozenset({"uri", "dns"}),
                san_required=False,
            ),
            Profile(
                name="kms-server",
                description="KMS server endpoint (mutual TLS)",
                key_usage={"digital_signature": True},
                extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
                max_validity_days=_TLS_DAYS,
                allowed_san_types=frozenset({"dns", "ip", "uri"}),
                san_required=False,
            ),
            Profile(
                name="email",
                description="S/MIME email signing and encryption",
                key_usage={"digital_signature": True, "key_encipherment": True},
                extended_key_usage=(ExtendedKeyUsageOID.EMAIL_PROTECTION,),
                max_validity_days=_LONG_DAYS,
                allowed_san_types=frozenset({"email"}),
                # S/MIME clients take the mailbox from the SAN (RFC 8550 section 3).
                san_required=True,
            ),
            Profile(
                name="code-signing",
                description="Code signing",
                key_usage={"digital_signature": True},
                extended_key_usage=(ExtendedKeyUsageOID.CODE_SIGNING,),
                max_validity_days=_LONG_DAYS,
                allowed_san_types=frozenset(),
                san_required=False,
            ),
            Profile(
                name="ocsp-responder",
                description="Delegated OCSP responder",
                key_usage={"digital_signature": True},
                extended_key_usage=(ExtendedKeyUsageOID.OCSP_SIGNING,),
                # Short-lived because, with id-pkix-ocsp-nocheck, it cannot be revoked in
                # practice (RFC 6960 section 4.2.2.2.1).
                max_validity_days=30,
                allowed_san_types=frozenset(),
                san_required=False,
                ocsp_no_check=True,
            ),
        )
    }
)
PROFILES: Mapping[str, Profile] = MappingProxyType(_REGISTRY)


def configure_tls_server_days(days: int) -> None:
    """Set the longest validity of the ``tls-server`` profile (1 to 398 days), e.g. from the
    ``KMS_TLS_SERVER_MAX_DAYS`` setting at start-up. ValueError outside that range."""
    if (
        isinstance(days, bool)
        or not isinstance(days, int)
        or not 1 <= days <= TLS_SERVER_LIMIT_DAYS
    ):
        raise ValueError(
            f"the tls-server maximum validity must be 1 to {TLS_SERVER_LIMIT_DAYS} days, not {days!r}"
        )
    _REGISTRY["tls-server"] = replace(_REGISTRY["tls-server"], max_validity_days=days)


def get_profile(name: str) -> Profile:
    """Return the leaf profile called ``name``; :class:`ProfileError` if there is none."""
    try:
        return PROFILES[name]
    except KeyError:
        if name == SUB_CA_PROFILE_NAME:
            raise ProfileError(
                "sub-ca is a CA certificate, not a leaf profile; issue it as an intermediate CA"
            ) from None
        choices = ", ".join(sorted(PROFILES))
        raise ProfileError(
            f"unknown certificate profile {name!r}; choose one of {choices}"
        ) from None
