"""Expiry notifications: ``manage.py notify_expiring`` and the watchers page.

What is reported
    * certificates (valid, not revoked) whose notAfter falls within one of the windows
      ``KMS_NOTIFY_WINDOWS_DAYS`` (default 30, 7 and 1 days): each certificate is reported
      once per window it enters. No storms from short-lived certificates: a certificate is
      only reported for a window shorter than its lifetime, and never when its lifetime is
      under ``KMS_NOTIFY_MIN_LIFETIME_DAYS`` (default 7): automation renews those, and a
      person cannot act on a daily flood;
    * active keys whose rotation is due (``next_rotation_at`` reached), once per due date.

Who is told
    certificates: every active CA operator with an email address, plus the watchers of the
    certificate's CA, its profile or the certificate itself; keys: every active key custodian
    with an email address. Optionally a webhook (``KMS_NOTIFY_WEBHOOK_URL``) receives every
    item as JSON, signed with HMAC-SHA256 under ``KMS_NOTIFY_WEBHOOK_SECRET`` in the
    ``X-KMS-Signature: sha256=<hex>`` header.

Idempotent and cron-safe: one digest per recipient per day (a unique row per recipient and
day), each item once per recipient (a unique notice row), one run at a time across nodes
(``kmsportal.locks``). A digest is recorded, audited and sent in one transaction: if the
mail cannot be handed to the mail server, nothing is recorded and the next run retries. The
webhook is last, the same way: if it cannot be reached or answers other than 2xx, nothing is
recorded for it and :class:`WebhookFailed` says so (the command exits 1 with that line); the
email digests sent before it stay sent and recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.roles import Role
from audit.services import audit_event_record
from kmsportal.crypto.errors import KMSError
from pki.models import Certificate, CertificateAuthority, CertificateStatus

from .events import NotificationAction
from .models import Digest, Notice, Watcher, WatchScope

__all__ = [
    "WEBHOOK_RECIPIENT",
    "NotifyResult",
    "WebhookFailed",
    "notify_expiring",
    "watcher_add",
    "watcher_remove",
    "webhook_signature",
]

WEBHOOK_RECIPIENT = "webhook"


class NotificationError(KMSError):
    """A watcher cannot be added as asked; the message says why."""

    code = "notification_refused"
    status = 400


class WebhookFailed(KMSError):
    """The webhook could not be delivered; nothing was recorded for it (the next run retries)."""

    code = "notification_webhook_failed"
    status = 502


@dataclass(frozen=True)
class Item:
    key: str  # identifies the item and its window: reported once per recipient
    kind: str  # "certificate" or "key"
    text: str
    due: datetime


@dataclass(frozen=True)
class NotifyResult:
    digests: int
    items: int
    skipped_recipients: int
    webhook_items: int


def _windows() -> list[int]:
    windows = getattr(settings, "KMS_NOTIFY_WINDOWS_DAYS", [30, 7, 1])
    return sorted({int(w) for w in windows if int(w) > 0})


def _active_with_email(role: Role) -> list[str]:
    users = (
        get_user_model().objects.filter(is_active=True, groups__name=role.value).exclude(email="")
    )
    return sorted({u.email.lower() for u in users})


def _certificate_items(now: datetime) -> list[tuple[Certificate, Item]]:
    windows = _windows()
    if not windows:
        return []
    minimum = timedelta(days=getattr(settings, "KMS_NOTIFY_MIN_LIFETIME_DAYS", 7))
    rows = (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .filter(
            status=CertificateStatus.VALID,
            not_after__gt=now,
            not_after__lte=now + timedelta(days=windows[-1]),
        )
        .order_by("not_after")
    )
    found = []
    for certificate in rows:
        lifetime = certificate.not_after - certificate.not_before
        if lifetime < minimum:
            continue
        left = certificate.not_after - now
        window = next(w for w in windows if left <= timedelta(days=w))
        if lifetime <= timedelta(days=window):
            continue  # it was "expiring" from the day it was issued
        label = certificate.subject or certificate.serial_number_display
        found.append(
            (
                certificate,
                Item(
                    key=f"certificate:{certificate.pk}:{window}",
                    kind="certificate",
                    text=(
                        f"certificate {label} (CA {certificate.ca.name}, serial "
                        f"{certificate.serial_number_display}, profile {certificate.profile}) "
                        f"expires {certificate.not_after:%Y-%m-%d %H:%M} UTC, within "
                        f"{window} day{'s' if window != 1 else ''}"
                    ),
                    due=certificate.not_after,
                ),
            )
        )
    return found


def _key_items(now: datetime) -> list[Item]:
    from vault.lifecycle import KeyState
    from vault.models import SymmetricKey

    keys = SymmetricKey.objects.filter(
        state=KeyState.ACTIVE, next_rotation_at__isnull=False, next_rotation_at__lte=now
    ).order_by("next_rotation_at")
    return [
        Item(
            key=f"key:{key.pk}:{key.next_rotation_at:%Y%m%dT%H%M}",
            kind="key",
            text=f"key {key.name}: rotation due since {key.next_rotation_at:%Y-%m-%d %H:%M} UTC",
            due=key.next_rotation_at,
        )
        for key in keys
        if key.next_rotation_at is not None  # the query asked for it; the type checker asks too
    ]


def _watchers_of(certificate: Certificate, watchers: list[Watcher]) -> set[str]:
    found = set()
    for watcher in watchers:
        if (
            (watcher.scope == WatchScope.CA and watcher.ca_id == certificate.ca_id)
            or (watcher.scope == WatchScope.PROFILE and watcher.profile == certificate.profile)
            or (
                watcher.scope == WatchScope.CERTIFICATE and watcher.certificate_id == certificate.pk
            )
        ):
            found.add(watcher.email.lower())
    return found


def _items_by_recipient(now: datetime) -> tuple[dict[str, list[Item]], list[Item]]:
    recipients: dict[str, list[Item]] = defaultdict(list)
    everything: list[Item] = []
    operators = _active_with_email(Role.CA_OPERATOR)
    watchers = list(Watcher.objects.all())
    for certificate, item in _certificate_items(now):
        everything.append(item)
        for email in {*operators, *_watchers_of(certificate, watchers)}:
            recipients[email].append(item)
    custodians = _active_with_email(Role.KEY_CUSTODIAN)
    for item in _key_items(now):
        everything.append(item)
        for email in custodians:
            recipients[email].append(item)
    return recipients, everything


def _new_items(recipient: str, items: list[Item]) -> list[Item]:
    told = set(
        Notice.objects.filter(recipient=recipient, key__in=[i.key for i in items]).values_list(
            "key", flat=True
        )
    )
    return [i for i in items if i.key not in told]


def _body(items: list[Item]) -> str:
    certificates = [i for i in items if i.kind == "certificate"]
    keys = [i for i in items if i.kind == "key"]
    lines = ["kmsportal: what needs attention soon.", ""]
    if certificates:
        lines += ["Certificates expiring:", *[f"  - {i.text}" for i in certificates], ""]
    if keys:
        lines += ["Keys whose rotation is due:", *[f"  - {i.text}" for i in keys], ""]
    lines.append("You get at most one such message a day; each item is reported once.")
    return "\n".join(lines) + "\n"


def webhook_signature(body: bytes, secret: str) -> str:
    """The ``X-KMS-Signature`` header value: ``sha256=`` and the hex HMAC-SHA256 of the
    body under the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _record(recipient: str, day: date, items: list[Item]) -> bool:
    """Record the digest and its notices; False if this recipient already had today's."""
    try:
        with transaction.atomic():
            Digest.objects.create(recipient=recipient, day=day, items=len(items))
    except IntegrityError:
        return False
    Notice.objects.bulk_create([Notice(recipient=recipient, key=i.key) for i in items])
    return True


def _send_webhook(day: object, items: list[Item]) -> None:
    url = getattr(settings, "KMS_NOTIFY_WEBHOOK_URL", "")
    secret = getattr(settings, "KMS_NOTIFY_WEBHOOK_SECRET", "")
    if len(secret) < 16:
        raise WebhookFailed("KMS_NOTIFY_WEBHOOK_SECRET must be set (16 characters or more)")
    payload = {
        "day": str(day),
        "items": [
            {"kind": i.kind, "id": i.key, "text": i.text, "due": i.due.isoformat()} for i in items
        ],
    }
    body = json.dumps(payload, sort_keys=True).encode()
    try:
        response = requests.post(
            url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-KMS-Signature": webhook_signature(body, secret),
            },
            timeout=15,
        )
    except requests.RequestException as exc:
        # The URL is not repeated: webhook URLs often carry a token.
        raise WebhookFailed(f"the webhook cannot be reached ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"the webhook answered HTTP {response.status_code}")


def notify_expiring(*, now: datetime | None = None) -> NotifyResult:
    """Send today's digests (see the module docstring); safe to run as often as wanted."""
    moment = now or timezone.now()
    day = timezone.localdate(moment)
    recipients, everything = _items_by_recipient(moment)
    digests = items = skipped = 0
    for recipient in sorted(recipients):
        fresh = _new_items(recipient, recipients[recipient])
        if not fresh:
            continue
        with transaction.atomic():
            if not _record(recipient, day, fresh):
                skipped += 1
                continue
            audit_event_record(
                action=NotificationAction.DIGEST_SENT,
                actor=None,
                target_type="notifications.Digest",
                target_label=recipient[:255],
                details={"recipient": recipient, "items": len(fresh), "day": str(day)},
            )
            send_mail(
                subject=f"kmsportal: {len(fresh)} item{'s' if len(fresh) != 1 else ''} "
                "expiring or due",
                message=_body(fresh),
                from_email=None,
                recipient_list=[recipient],
            )
        digests += 1
        items += len(fresh)
    webhook_items = 0
    if getattr(settings, "KMS_NOTIFY_WEBHOOK_URL", ""):
        fresh = _new_items(WEBHOOK_RECIPIENT, everything)
        if fresh:
            # Recorded, audited and POSTed in one transaction: a webhook that fails records
            # nothing for it (the email digests above are already sent and stay recorded).
            try:
                with transaction.atomic():
                    if _record(WEBHOOK_RECIPIENT, day, fresh):
                        audit_event_record(
                            action=NotificationAction.DIGEST_SENT,
                            actor=None,
                            target_type="notifications.Digest",
                            target_label="webhook",
                            details={
                                "recipient": "webhook",
                                "items": len(fresh),
                                "day": str(day),
                            },
                        )
                        _send_webhook(day, fresh)
                        webhook_items = len(fresh)
            except WebhookFailed as exc:
                raise WebhookFailed(
                    f"{exc.message}: nothing was recorded for the webhook, so the next run "
                    f"sends its {len(fresh)} item(s) again ({digests} email digest(s) with "
                    f"{items} item(s) were sent)"
                ) from None
    return NotifyResult(digests, items, skipped, webhook_items)


# --- watchers --------------------------------------------------------------------------------


@transaction.atomic
def watcher_add(
    *,
    actor: User,
    email: str,
    scope: str,
    ca_name: str = "",
    profile: str = "",
    certificate_id: int | None = None,
) -> Watcher:
    """Add a recipient for the certificates of one CA, profile or certificate. Audited."""
    if not actor.has_perm("notifications.manage_watcher"):
        raise NotificationError("managing expiry watchers needs the manage_watcher permission")
    watcher = Watcher(email=email.strip().lower(), scope=scope, created_by=actor)
    if scope == WatchScope.CA:
        watcher.ca = (
            CertificateAuthority.objects.defer("sealed_private_key").filter(name=ca_name).first()
        )
        if watcher.ca is None:
            raise NotificationError(f"there is no CA named {ca_name!r}")
    elif scope == WatchScope.PROFILE:
        from kmsportal.crypto.profiles import PROFILES

        if profile not in PROFILES:
            raise NotificationError(f"there is no profile named {profile!r}")
        watcher.profile = profile
    elif scope == WatchScope.CERTIFICATE:
        watcher.certificate = (
            Certificate.objects.filter(pk=certificate_id).first()
            if certificate_id is not None
            else None
        )
        if watcher.certificate is None:
            raise NotificationError(f"there is no certificate with id {certificate_id!r}")
    else:
        raise NotificationError(f"unknown scope {scope!r}")
    watcher.save()
    audit_event_record(
        action=NotificationAction.WATCHER_ADDED,
        actor=actor,
        target=watcher,
        target_label=str(watcher)[:255],
        details={"email": watcher.email, "watches": watcher.target_label},
    )
    return watcher


@transaction.atomic
def watcher_remove(*, actor: User, watcher: Watcher) -> None:
    """Remove a watcher. Audited."""
    if not actor.has_perm("notifications.manage_watcher"):
        raise NotificationError("managing expiry watchers needs the manage_watcher permission")
    details = {"email": watcher.email, "watches": watcher.target_label}
    label = str(watcher)[:255]
    audit_event_record(
        action=NotificationAction.WATCHER_REMOVED,
        actor=actor,
        target=watcher,
        target_label=label,
        details=details,
    )
    watcher.delete()
