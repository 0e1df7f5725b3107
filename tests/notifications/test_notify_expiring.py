"""Expiry notifications: `manage.py notify_expiring` sends one digest per recipient per day
(Django's locmem mail backend), reports each item once, never floods with short-lived
certificates, signs the optional webhook (a real HTTP receiver), and watchers are managed on
a portal page by CA operators."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from notifications.models import Digest, Notice, Watcher
from notifications.services import notify_expiring, watcher_add, webhook_signature
from pki import services as pki_services
from pki.models import Certificate
from tests.pki.conftest import csr_pem

pytestmark = pytest.mark.django_db


def issue(ca, key, name: str, days: int) -> Certificate:
    return pki_services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
        days=days,
    )


def age(certificate: Certificate, days: float) -> None:
    """Move a certificate's validity ``days`` into the past (as if issued earlier)."""
    certificate.refresh_from_db()
    shift = timedelta(days=days)
    Certificate.objects.filter(pk=certificate.pk).update(
        not_before=certificate.not_before - shift, not_after=certificate.not_after - shift
    )


@pytest.fixture
def people(make_user):
    return {
        "operator": make_user("olga", Role.CA_OPERATOR, email="olga@example.org"),
        "silent": make_user("omar", Role.CA_OPERATOR),  # no email: nothing to send to
        "custodian": make_user("kim", Role.KEY_CUSTODIAN, email="kim@example.org"),
        "admin": make_user("ada", Role.ADMINISTRATOR, email="ada@example.org"),
    }


def run() -> str:
    out = StringIO()
    call_command("notify_expiring", stdout=out)
    return out.getvalue()


def test_one_digest_per_recipient_per_day_each_item_once(issuing, ec_key, people) -> None:
    soon = issue(issuing, ec_key, "soon.example.org", days=90)
    age(soon, 70)  # 20 days left: inside the 30-day window
    later = issue(issuing, ec_key, "later.example.org", days=90)  # 90 days left: not yet
    watcher_add(actor=people["admin"], email="team@example.org", scope="ca", ca_name="issuing")

    assert "sent 2 digest(s) with 2 item(s)" in run()
    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert set(by_recipient) == {"olga@example.org", "team@example.org"}  # not kim, not ada
    body = by_recipient["olga@example.org"].body
    assert "soon.example.org" in body and "within 30 days" in body
    assert "later.example.org" not in body
    assert Digest.objects.count() == 2
    assert AuditEvent.objects.filter(action="notification.digest_sent").count() == 2

    # Idempotent: the same day, nothing new and nothing repeated.
    mail.outbox.clear()
    assert "sent 0 digest(s)" in run()
    assert mail.outbox == []

    # Entering the 7-day window is news again, the next day (one digest a day at most).
    age(soon, 14)
    assert notify_expiring().digests == 0  # today's digest was sent already
    tomorrow = timezone.now() + timedelta(days=1)
    result = notify_expiring(now=tomorrow)
    assert result.digests == 2 and result.items == 2
    assert "within 7 days" in mail.outbox[-1].body
    assert later.pk  # still quiet


def test_no_storm_for_short_lived_certificates(issuing, ec_key, people) -> None:
    for index in range(20):
        short = issue(issuing, ec_key, f"short{index}.example.org", days=3)
        assert short.not_after - timezone.now() < timedelta(days=7)
    ten = issue(issuing, ec_key, "ten.example.org", days=10)  # lifetime 10 days
    # Not "expiring within 30 days" from the day it was issued: nothing yet.
    assert notify_expiring().items == 0
    age(ten, 4)  # 6 days left: it enters the 7-day window, shorter than its lifetime
    tomorrow = timezone.now() + timedelta(days=1)
    assert notify_expiring(now=tomorrow).items == 1  # only the 10-day certificate
    assert "ten.example.org" in mail.outbox[0].body and "short" not in mail.outbox[0].body


def test_keys_due_for_rotation_go_to_key_custodians(people) -> None:
    from vault import services as vault_services
    from vault.models import SymmetricKey

    key = vault_services.symmetric_key_create(actor=None, name="payments", rotation_period_days=30)
    SymmetricKey.objects.filter(pk=key.pk).update(
        next_rotation_at=timezone.now() - timedelta(hours=1)
    )
    result = notify_expiring()
    assert result.digests == 1
    [message] = mail.outbox
    assert message.to == ["kim@example.org"]
    assert "key payments: rotation due since" in message.body


def test_profile_and_certificate_watchers(issuing, ec_key, people) -> None:
    one = issue(issuing, ec_key, "one.example.org", days=90)
    age(one, 85)
    watcher_add(actor=people["operator"], email="p@example.org", scope="profile",
                profile="tls-server")  # fmt: skip
    watcher_add(actor=people["operator"], email="c@example.org", scope="certificate",
                certificate_id=one.pk)  # fmt: skip
    notify_expiring()
    assert {m.to[0] for m in mail.outbox} == {"olga@example.org", "p@example.org", "c@example.org"}


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_signed_webhook(issuing, ec_key, people, settings) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.received = []
    secret = "a-webhook-secret-of-some-length"
    settings.KMS_NOTIFY_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    settings.KMS_NOTIFY_WEBHOOK_SECRET = secret
    try:
        soon = issue(issuing, ec_key, "hook.example.org", days=90)
        age(soon, 80)
        result = notify_expiring()
        assert result.webhook_items == 1
        [(headers, body)] = Receiver.received
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-KMS-Signature"] == expected == webhook_signature(body, secret)
        payload = json.loads(body)
        assert payload["items"][0]["kind"] == "certificate"
        assert "hook.example.org" in payload["items"][0]["text"]
        assert notify_expiring().webhook_items == 0  # once a day, each item once
        assert len(Receiver.received) == 1
    finally:
        server.shutdown()


def test_watchers_page(signed_in, people, issuing) -> None:
    operator = signed_in(people["operator"])
    page = operator.get("/notifications/watchers/")
    assert page.status_code == 200 and "No watchers yet" in page.content.decode()
    added = operator.post(
        "/notifications/watchers/",
        {"email": "ops@example.org", "scope": "ca", "ca_name": "issuing"},
    )
    assert added.status_code == 302
    watcher = Watcher.objects.get()
    assert watcher.target_label == "CA issuing"
    assert AuditEvent.objects.filter(action="notification.watcher_added").exists()
    bad = operator.post(
        "/notifications/watchers/", {"email": "x@example.org", "scope": "ca", "ca_name": "nope"}
    )
    assert bad.status_code == 400 and "There is no CA named" in bad.content.decode()  # a capital
    assert operator.post(f"/notifications/watchers/{watcher.pk}/delete/").status_code == 400
    removed = operator.post(f"/notifications/watchers/{watcher.pk}/delete/", {"confirm": "yes"})
    assert removed.status_code == 302 and not Watcher.objects.exists()
    assert AuditEvent.objects.filter(action="notification.watcher_removed").exists()


def test_inactive_users_are_not_told(issuing, ec_key, people, make_user) -> None:
    from vault import services as vault_services
    from vault.models import SymmetricKey

    make_user("gone-operator", Role.CA_OPERATOR, email="gone-op@example.org")
    make_user("gone-custodian", Role.KEY_CUSTODIAN, email="gone-kc@example.org")
    User = get_user_model()
    User.objects.filter(username__startswith="gone-").update(is_active=False)
    soon = issue(issuing, ec_key, "soon.example.org", days=90)
    age(soon, 80)
    key = vault_services.symmetric_key_create(actor=None, name="ledger", rotation_period_days=30)
    SymmetricKey.objects.filter(pk=key.pk).update(
        next_rotation_at=timezone.now() - timedelta(hours=1)
    )
    result = notify_expiring()
    assert {m.to[0] for m in mail.outbox} == {"olga@example.org", "kim@example.org"}
    assert result.digests == 2
    assert not Digest.objects.filter(recipient__startswith="gone-").exists()


class FailingReceiver(http.server.BaseHTTPRequestHandler):
    status = 500
    received: list[bytes] = []

    def do_POST(self) -> None:
        FailingReceiver.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(FailingReceiver.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failing_webhook_records_nothing_for_it_and_says_so(
    issuing, ec_key, people, settings
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FailingReceiver.status, FailingReceiver.received = 500, []
    settings.KMS_NOTIFY_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    settings.KMS_NOTIFY_WEBHOOK_SECRET = "a-webhook-secret-of-some-length"
    try:
        soon = issue(issuing, ec_key, "hook.example.org", days=90)
        age(soon, 80)
        with pytest.raises(CommandError) as failed:
            run()
        assert str(failed.value) == (
            "the webhook answered HTTP 500: nothing was recorded for the webhook, so the next "
            "run sends its 1 item(s) again (1 email digest(s) with 1 item(s) were sent)"
        )
        assert len(FailingReceiver.received) == 1
        # The email digest went out and is recorded; the webhook's is not, nor audited.
        assert [m.to[0] for m in mail.outbox] == ["olga@example.org"]
        assert list(Digest.objects.values_list("recipient", flat=True)) == ["olga@example.org"]
        assert not Notice.objects.filter(recipient="webhook").exists()
        assert AuditEvent.objects.filter(action="notification.digest_sent").count() == 1

        # The webhook back: the next run delivers the item, and emails nobody twice.
        FailingReceiver.status = 204
        assert "1 item(s) to the webhook" in run()
        assert len(FailingReceiver.received) == 2
        assert len(mail.outbox) == 1
        assert Digest.objects.filter(recipient="webhook").count() == 1
    finally:
        server.shutdown()
        server.server_close()

    # Unreachable (the receiver is gone): one clear line, the URL not repeated.
    soon2 = issue(issuing, ec_key, "hook2.example.org", days=90)
    age(soon2, 80)
    Digest.objects.filter(recipient="webhook").delete()
    with pytest.raises(CommandError) as unreachable:
        run()
    assert str(unreachable.value).startswith(
        "the webhook cannot be reached (ConnectionError): nothing was recorded for the webhook"
    )
    assert "127.0.0.1" not in str(unreachable.value)
