"""Importing an existing CA (certificate + private key, PKCS#8 or PKCS#12) into the
configured key backend: with pkcs11 the key becomes a non-extractable token object.

The checks `certificate_authority_create` makes apply (`kmsportal.crypto.ca_bundle`): the
key matches the certificate, the certificate is a CA, valid now, and signed by itself (a
root) or by an active CA of this portal (an intermediate, recorded under it).
"""

from __future__ import annotations

import re

from cryptography import x509
from django.db import transaction
from django.utils import timezone

from kmsportal.actors import Actor, actor_name
from kmsportal.crypto.ca_bundle import (
    CABundle,
    CABundleError,
    ca_bundle_check,
    ca_bundle_load,
    ca_pkcs12_load,
)
from kmsportal.crypto.x509 import format_name

from .errors import PkiError
from .events import PkiAction
from .models import (
    CA_NAME_MESSAGE,
    CA_NAME_PATTERN,
    CAState,
    CertificateAuthority,
)
from .services.cas import _ca_store
from .services.records import RESERVED_CA_NAMES, _certificate_of
from .signers import GeneratedCAKey

__all__ = ["certificate_authority_import"]


def certificate_authority_import(
    *,
    actor: Actor,
    name: str,
    certificate: bytes | None = None,
    private_key: bytes | None = None,
    pkcs12: bytes | None = None,
    password: bytes | None = None,
) -> CertificateAuthority:
    """Import a CA from ``certificate`` + ``private_key`` (PEM or DER; the key PKCS#8,
    encrypted with ``password`` or not) or from one ``pkcs12`` file. Raises PkiError."""
    if not re.fullmatch(CA_NAME_PATTERN, name or ""):
        raise PkiError(f"the CA name {name!r} is not valid: {CA_NAME_MESSAGE}")
    if name in RESERVED_CA_NAMES:
        raise PkiError(f"{name!r} is a reserved word and cannot name a CA")
    try:
        if pkcs12 is not None:
            if certificate is not None or private_key is not None:
                raise CABundleError("give either a PKCS#12 file or a certificate and a key")
            bundle = ca_pkcs12_load(pkcs12, password)
        else:
            if certificate is None or private_key is None:
                raise CABundleError("give the CA certificate and its private key")
            bundle = ca_bundle_load(certificate, private_key, password)
    except CABundleError as exc:
        raise PkiError(str(exc)) from None
    with transaction.atomic():
        return _import(actor=actor, name=name, bundle=bundle)


def _import(*, actor: Actor, name: str, bundle: CABundle) -> CertificateAuthority:
    subject = format_name(bundle.certificate.subject)
    if CertificateAuthority.objects.filter(name=name).exists():
        raise PkiError(f"a CA named {name!r} already exists")
    if CertificateAuthority.objects.filter(subject=subject).exists():
        raise PkiError(
            f"a CA with the subject {subject!r} already exists; relying parties find issuers "
            "by subject name, so every CA needs its own"
        )
    parent = None
    if not bundle.self_signed:
        parent = (
            CertificateAuthority.objects.select_for_update()
            .filter(subject=format_name(bundle.certificate.issuer))
            .first()
        )
        if parent is not None and parent.state != CAState.ACTIVE:
            raise PkiError(f"the issuing CA {parent.name} is {parent.get_state_display()}")
    try:
        ca_bundle_check(
            bundle,
            now=timezone.now(),
            issuer=_certificate_of(parent) if parent is not None else None,
        )
    except CABundleError as exc:
        raise PkiError(str(exc)) from None
    if parent is not None and bundle.certificate.not_valid_after_utc > parent.not_after:
        raise PkiError(f"the certificate outlives its issuing CA {parent.name}")
    if parent is not None and parent.path_length is not None and parent.path_length < 1:
        raise PkiError(
            f"the issuing CA {parent.name} has path length {parent.path_length}: it may not "
            "have intermediates"
        )

    certificate = bundle.certificate
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    new_key = GeneratedCAKey(bundle.key_type, private_key=bundle.private_key)
    ca = CertificateAuthority(
        name=name,
        subject=subject,
        parent=parent,
        key_type=bundle.key_type.value,
        path_length=constraints.path_length,
        created_by=actor,
        created_by_name=actor_name(actor),
    )
    ca.sealed_private_key = new_key.seal(aad=ca.aad)
    return _ca_store(
        ca=ca,
        certificate=certificate,
        actor=actor,
        signer=new_key.signer,
        action=PkiAction.CA_IMPORTED,
        extra_details={"key_backend": new_key.backend_name},
    )
