"""Generated-key issuance from the portal: once per form, then a result page and one download.

The confirmation form carries a random idempotency token. Submitting it:

1. claims the token (its SHA-256 is unique in `GeneratedKeyDelivery`), in a short
   transaction of its own: a second submit of the same form, by a double click or from
   another worker, finds the claim and issues nothing;
2. generates the key and issues the certificate (pki.services), and in the same transaction
   stores the password-protected file sealed under the master keyring on the claim;
3. the view redirects (Post/Redirect/Get) to the result page: serial, a link to the
   certificate, and a download button that works once, within `DELIVERY_TTL`; the sealed
   file is erased when downloaded or expired.

A claim whose issuance failed (bad input found late, a crash) has no certificate: the result
page says so and nothing was issued.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from kmsportal.keyring.services import seal, unseal

from .errors import PkiError
from .models import CertificateAuthority, GeneratedKeyDelivery
from .services import GeneratedCredential, certificate_issue_generated

PKCS12_TYPE = "application/x-pkcs12"
PEM_TYPE = "application/x-pem-file"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Submission:
    delivery: GeneratedKeyDelivery
    issued_now: bool  # False: this form was submitted before; nothing was issued again


def _claim(*, actor: User, token: str) -> tuple[GeneratedKeyDelivery, bool]:
    if len(token) < 16:
        raise PkiError("This form has expired; start the issuance again.")
    try:
        with transaction.atomic():
            return (
                GeneratedKeyDelivery.objects.create(
                    token_hash=_token_hash(token), requested_by=actor
                ),
                True,
            )
    except IntegrityError:
        existing = GeneratedKeyDelivery.objects.filter(
            token_hash=_token_hash(token), requested_by=actor
        ).first()
        if existing is None:  # another user's token: never show their result
            raise PkiError("This form has expired; start the issuance again.") from None
        return existing, False


def generated_key_issue_once(
    *,
    actor: User,
    token: str,
    ca: CertificateAuthority,
    subject: str,
    sans: Sequence[str],
    profile: str,
    pkcs12_password: str,
    days: int | None,
    key_type: str,
    pem_bundle: bool,
) -> Submission:
    """Issue a certificate with a generated key for the form identified by ``token``, at
    most once; a repeated submit returns the first submission's delivery."""
    generated_key_deliveries_expire()
    delivery, new = _claim(actor=actor, token=token)
    if not new:
        return Submission(delivery=delivery, issued_now=False)

    def keep_for_download(credential: GeneratedCredential) -> None:
        if pem_bundle and credential.pem_bundle is not None:
            content, content_type, suffix = credential.pem_bundle, PEM_TYPE, "pem"
        else:
            content, content_type, suffix = credential.pkcs12, PKCS12_TYPE, "p12"
        delivery.certificate = credential.certificate
        delivery.filename = f"{credential.filename_stem}.{suffix}"
        delivery.content_type = content_type
        delivery.sealed_bundle = seal(content, aad=delivery.aad)
        delivery.save(update_fields=["certificate", "filename", "content_type", "sealed_bundle"])

    try:
        certificate_issue_generated(
            actor=actor,
            ca=ca,
            subject=subject,
            sans=sans,
            profile=profile,
            days=days,
            key_type=key_type,
            pkcs12_password=pkcs12_password,
            pem_bundle=pem_bundle,
            in_transaction=keep_for_download,
        )
    except PkiError:
        # Nothing was issued: release the token so the corrected form can be sent again.
        GeneratedKeyDelivery.objects.filter(pk=delivery.pk, certificate__isnull=True).delete()
        raise
    return Submission(delivery=delivery, issued_now=True)


def generated_key_delivery_get(
    *, user: User, delivery_id: uuid.UUID
) -> GeneratedKeyDelivery | None:
    """The user's own delivery (another user's is None: they never see it)."""
    return (
        GeneratedKeyDelivery.objects.select_related("certificate__ca")
        .filter(pk=delivery_id, requested_by=user)
        .first()
    )


@dataclass(frozen=True)
class DeliveredFile:
    content: bytes
    content_type: str
    filename: str


@transaction.atomic
def generated_key_download(*, user: User, delivery_id: uuid.UUID) -> DeliveredFile | None:
    """The file, once: unsealed and erased in one transaction. None when already downloaded,
    expired, or not the user's."""
    delivery = (
        GeneratedKeyDelivery.objects.select_for_update()
        .filter(pk=delivery_id, requested_by=user)
        .first()
    )
    if delivery is None or not delivery.sealed_bundle:
        return None
    blob = bytes(delivery.sealed_bundle)
    delivery.sealed_bundle = b""
    if timezone.now() >= delivery.expires_at:
        delivery.save(update_fields=["sealed_bundle"])
        return None
    delivery.delivered_at = timezone.now()
    delivery.save(update_fields=["sealed_bundle", "delivered_at"])
    return DeliveredFile(
        content=unseal(blob, aad=delivery.aad),
        content_type=delivery.content_type,
        filename=delivery.filename,
    )


def generated_key_deliveries_expire() -> int:
    """Erase every file not downloaded within `DELIVERY_TTL`; returns how many."""
    cutoff = timezone.now() - GeneratedKeyDelivery.DELIVERY_TTL
    return (
        GeneratedKeyDelivery.objects.filter(created_at__lt=cutoff)
        .exclude(sealed_bundle=b"")
        .update(sealed_bundle=b"")
    )
