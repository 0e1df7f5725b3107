"""Multi-factor sign-in (TOTP and recovery codes), through real HTTP requests and the services."""

from __future__ import annotations

import base64
import logging
import re
import threading
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import Client

from accounts import mfa
from accounts.models import MfaDevice, RecoveryCode
from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.crypto import otp
from kmsportal.crypto.envelope import EnvelopeIntegrityError
from kmsportal.keyring.services import keyring_reset, unseal
from tests.factories import (
    TEST_PASSWORD,
    mfa_enroll,
    mfa_next_code,
    mfa_secret,
    password_sign_in,
    totp_code,
)

pytestmark = pytest.mark.django_db

MFA_ROLES = [Role.ADMINISTRATOR, Role.KEY_CUSTODIAN, Role.CA_OPERATOR]
THREADS = 6


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def secret_on_page(content: bytes) -> str:
    match = re.search(rb'<code id="mfa-secret">([^<]*)</code>', content)
    assert match, "no #mfa-secret on the page"
    return "".join(match.group(1).decode().split())


def decode_secret(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def recovery_codes_on_page(content: bytes) -> list[str]:
    block = re.search(rb'<ol id="recovery-codes"[^>]*>(.*?)</ol>', content, re.S)
    assert block, "no #recovery-codes on the page"
    return [c.decode() for c in re.findall(rb"<code>([^<]+)</code>", block.group(1))]


def password_only(user: User) -> Client:
    """A client past the password step only."""
    client = Client()
    response = password_sign_in(client, user)
    assert response.status_code == 302
    return client


# --- who must use it --------------------------------------------------------------------


@pytest.mark.parametrize("role", MFA_ROLES)
def test_password_alone_reaches_only_the_mfa_pages(make_user, role: Role) -> None:
    user = make_user(f"new-{role.value}", role)
    client = Client()
    response = password_sign_in(client, user)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/mfa/enroll/?next=%2F"  # no authenticator yet
    assert client.get("/")["Location"] == "/accounts/mfa/enroll/?next=%2F"
    assert client.get("/users/?q=x")["Location"] == "/accounts/mfa/enroll/?next=%2Fusers%2F%3Fq%3Dx"
    assert client.post("/accounts/password/", {}).status_code == 403
    assert client.get("/accounts/mfa/enroll/").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_with_an_authenticator_the_password_leads_to_verify(make_user) -> None:
    user = make_user("vera", Role.KEY_CUSTODIAN)
    mfa_enroll(user)
    client = Client()
    response = client.post(
        "/accounts/login/?next=/keys/", {"username": "vera", "password": TEST_PASSWORD}
    )
    assert response["Location"] == "/accounts/mfa/verify/?next=%2Fkeys%2F"
    assert client.get("/keys/")["Location"] == "/accounts/mfa/verify/?next=%2Fkeys%2F"
    # enrolling again is not open to a session that has not passed the second factor
    assert client.get("/accounts/mfa/enroll/")["Location"].startswith("/accounts/mfa/verify/")
    page = client.get("/accounts/mfa/verify/?next=/keys/")
    assert page.status_code == 200
    assert b'name="code"' in page.content and b'autocomplete="one-time-code"' in page.content
    assert b"Authentication code" in page.content and b">Verify</button>" in page.content
    assert b'inputmode="numeric"' not in page.content  # recovery codes have letters
    assert b'href="/keys/"' not in page.content  # no navigation before the second factor
    assert page["Cache-Control"].startswith("max-age=0")  # never_cache
    response = client.post("/accounts/mfa/verify/", {"code": mfa_next_code(user), "next": "/keys/"})
    assert response.status_code == 302 and response["Location"] == "/keys/"
    assert client.get("/keys/").status_code == 200
    (event,) = events("auth.mfa_verified")
    assert event.actor_name == "vera" and event.details == {"method": "totp"}


def test_verification_cycles_the_session_key(make_user) -> None:
    user = make_user("fixation", Role.CA_OPERATOR)
    mfa_enroll(user)
    client = password_only(user)
    before = client.session.session_key
    client.post("/accounts/mfa/verify/", {"code": mfa_next_code(user)})
    assert client.session.session_key != before
    assert client.session[mfa.SESSION_VERIFIED] is True


def test_next_must_stay_on_this_site(make_user) -> None:
    user = make_user("nina", Role.ADMINISTRATOR)
    mfa_enroll(user)
    client = password_only(user)
    response = client.post(
        "/accounts/mfa/verify/", {"code": mfa_next_code(user), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_force_login_alone_does_not_reach_the_portal(admin_user: User) -> None:
    client = Client()
    client.force_login(admin_user)  # no password form, no second factor
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/mfa/enroll/")
    mfa_enroll(admin_user)
    assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")
    assert client.post("/users/new/", {}).status_code == 403
    denied = events("access.denied")[-1]
    assert denied.details["reason"] == "multi-factor verification required"


def test_auditor_without_mfa_signs_in_with_the_password(make_user) -> None:
    auditor = make_user("otto", Role.AUDITOR)
    client = Client()
    response = password_sign_in(client, auditor)
    assert response["Location"] == "/"
    assert client.get("/audit/").status_code == 200
    page = client.get("/accounts/mfa/")
    assert b"Enrol an authenticator" in page.content
    assert events("auth.mfa_verified") == []


def test_auditor_who_enrolled_must_use_it(make_user) -> None:
    auditor = make_user("ursula", Role.AUDITOR)
    mfa_enroll(auditor)
    assert mfa.mfa_required_for(auditor)
    client = password_only(auditor)
    assert client.get("/audit/")["Location"] == "/accounts/mfa/verify/?next=%2Faudit%2F"
    client.post("/accounts/mfa/verify/", {"code": mfa_next_code(auditor)})
    assert client.get("/audit/").status_code == 200


def test_required_roles_come_from_the_setting(make_user, settings) -> None:
    admin = make_user("relaxed-admin", Role.ADMINISTRATOR)
    auditor = make_user("strict-auditor", Role.AUDITOR)
    settings.KMS_MFA_REQUIRED_ROLES = ["auditor"]
    assert not mfa.mfa_required_for(admin) and mfa.mfa_required_for(auditor)
    assert password_sign_in(Client(), admin)["Location"] == "/"
    assert password_sign_in(Client(), auditor)["Location"].startswith("/accounts/mfa/enroll/")


def test_a_misspelt_role_in_the_setting_is_a_startup_error(settings) -> None:
    from accounts.checks import check_mfa_required_roles

    settings.KMS_MFA_REQUIRED_ROLES = ["administrator", "key-custodian", "adminstrator"]
    (error,) = check_mfa_required_roles()
    assert error.id == "accounts.E001" and "adminstrator" in error.msg


# --- enrollment -------------------------------------------------------------------------


def test_enrollment_page_shows_a_qr_code_and_the_secret(make_user) -> None:
    user = make_user("quinn", Role.ADMINISTRATOR)
    client = password_only(user)
    page = client.get("/accounts/mfa/enroll/")
    assert page.status_code == 200
    html = page.content.decode()
    svg = re.search(r"<svg\b.*?</svg>", html, re.S).group(0)
    assert 'class="qrline"' in svg and "<path" in svg
    assert "style" not in svg.lower() and "<script" not in svg.lower()
    assert page["Cache-Control"].startswith("no-store")
    shown = secret_on_page(page.content)
    device = MfaDevice.objects.get(user=user)
    assert device.confirmed_at is None
    assert decode_secret(shown) == unseal(device.sealed_secret, aad=device.aad)
    assert len(shown) == 32 and "=" not in shown
    assert b'name="code"' in page.content and b">Confirm</button>" in page.content


def test_a_wrong_code_changes_nothing(make_user) -> None:
    user = make_user("wanda", Role.KEY_CUSTODIAN)
    client = password_only(user)
    secret = decode_secret(secret_on_page(client.get("/accounts/mfa/enroll/").content))
    device_before = MfaDevice.objects.values().get(user=user)
    wrong = "000000" if totp_code(secret) != "000000" else "111111"
    response = client.post("/accounts/mfa/enroll/", {"code": wrong})
    assert response.status_code == 400
    assert b"not valid" in response.content
    assert secret_on_page(response.content) == otp.totp_secret_base32(secret)  # same QR again
    assert MfaDevice.objects.values().get(user=user) == device_before
    assert not RecoveryCode.objects.filter(user=user).exists()
    assert client.get("/")["Location"].startswith("/accounts/mfa/enroll/")  # still pending
    (failed,) = events("auth.mfa_failed")
    assert failed.outcome == "denied"
    assert failed.details == {"purpose": "enrollment", "method": "totp", "reason": "wrong code"}
    assert events("auth.mfa_enrolled") == []


def test_a_correct_code_confirms_and_shows_ten_recovery_codes_once(make_user) -> None:
    user = make_user("carla", Role.CA_OPERATOR)
    client = password_only(user)
    secret = decode_secret(secret_on_page(client.get("/accounts/mfa/enroll/?next=/pki/").content))
    response = client.post("/accounts/mfa/enroll/", {"code": totp_code(secret), "next": "/pki/"})
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("no-store")
    codes = recovery_codes_on_page(response.content)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code) for code in codes)
    assert b'href="/pki/"' in response.content and b"Continue" in response.content
    stored = set(RecoveryCode.objects.filter(user=user).values_list("code_hash", flat=True))
    assert stored == {otp.recovery_code_hash(code) for code in codes}
    assert not any(code.replace("-", "") in h for h in stored for code in codes)
    device = MfaDevice.objects.get(user=user)
    assert device.confirmed_at is not None and device.last_used_step >= otp.totp_step() - 1
    # The enrollment passed the second factor: the portal is open.
    assert client.get("/pki/").status_code == 200
    # The codes are never shown again.
    manage = client.get("/accounts/mfa/")
    assert b"recovery-codes" not in manage.content.replace(b"recovery-codes-left", b"")
    assert not any(code.encode() in manage.content for code in codes)
    assert client.get("/accounts/mfa/enroll/")["Location"] == "/accounts/mfa/"
    (enrolled,) = events("auth.mfa_enrolled")
    assert enrolled.details == {"method": "totp", "recovery_codes": 10}


def test_a_confirmed_device_is_never_replaced_by_enrollment(make_user) -> None:
    user = make_user("kept", Role.ADMINISTRATOR)
    secret = mfa_enroll(user)
    with pytest.raises(mfa.MfaAlreadyEnrolled):
        mfa.mfa_enrollment_begin(user=user)
    assert mfa_secret(user) == secret


def test_restarting_enrollment_replaces_the_unconfirmed_secret(make_user) -> None:
    user = make_user("again", Role.ADMINISTRATOR)
    first = mfa.mfa_enrollment_begin(user=user)
    second = mfa.mfa_enrollment_begin(user=user)
    assert first.secret_base32 != second.secret_base32
    assert MfaDevice.objects.filter(user=user).count() == 1
    stale = totp_code(decode_secret(first.secret_base32))
    if stale != totp_code(decode_secret(second.secret_base32)):
        with pytest.raises(mfa.MfaCodeInvalid):
            mfa.mfa_enrollment_confirm(user=user, code=stale)


# --- codes ------------------------------------------------------------------------------


def test_a_totp_code_cannot_be_replayed(make_user) -> None:
    user = make_user("replay", Role.KEY_CUSTODIAN)
    mfa_enroll(user)
    code = mfa_next_code(user)
    first = password_only(user)
    assert first.post("/accounts/mfa/verify/", {"code": code}).status_code == 302
    second = password_only(user)
    response = second.post("/accounts/mfa/verify/", {"code": code})
    assert response.status_code == 400
    assert b"already used" in response.content
    assert second.get("/")["Location"].startswith("/accounts/mfa/verify/")
    failed = events("auth.mfa_failed")[-1]
    assert failed.details == {"purpose": "sign_in", "method": "totp", "reason": "code already used"}


def test_an_earlier_step_is_refused_after_a_later_one(make_user) -> None:
    user = make_user("order", Role.KEY_CUSTODIAN)
    secret = mfa_enroll(user)
    now = otp.totp_step() * 30 + 15.0
    step = otp.totp_step(now)
    mfa.mfa_verify(user=user, code=otp.totp_code(secret, step + 1), at=now)
    with pytest.raises(mfa.MfaCodeInvalid, match="already used"):
        mfa.mfa_verify(user=user, code=otp.totp_code(secret, step), at=now)


def test_a_recovery_code_works_once_and_only_once(make_user) -> None:
    user = make_user("rhea", Role.ADMINISTRATOR)
    client = password_only(user)
    secret = decode_secret(secret_on_page(client.get("/accounts/mfa/enroll/").content))
    codes = recovery_codes_on_page(
        client.post("/accounts/mfa/enroll/", {"code": totp_code(secret)}).content
    )
    typed = codes[3].lower().replace("-", " ")  # case and hyphens do not matter
    phone_lost = password_only(user)
    response = phone_lost.post("/accounts/mfa/verify/", {"code": typed})
    assert response.status_code == 302
    assert phone_lost.get("/").status_code == 200
    verified = events("auth.mfa_verified")[-1]
    assert verified.details == {"method": "recovery_code", "recovery_codes_left": 9}
    assert RecoveryCode.objects.filter(user=user, used_at__isnull=False).count() == 1

    again = password_only(user)
    response = again.post("/accounts/mfa/verify/", {"code": codes[3]})
    assert response.status_code == 400
    assert b"not valid or was already used" in response.content
    assert events("auth.mfa_failed")[-1].details["method"] == "recovery_code"
    # another unused one still works
    assert again.post("/accounts/mfa/verify/", {"code": codes[4]}).status_code == 302


def test_regenerating_recovery_codes_needs_a_totp_code_and_voids_the_old(
    make_user, signed_in
) -> None:
    user = make_user("regen", Role.ADMINISTRATOR)
    client = signed_in(user)
    old_hashes = set(RecoveryCode.objects.filter(user=user).values_list("code_hash", flat=True))
    refused = client.post("/accounts/mfa/", {"code": "ABCD-EFGH-JKLM-NPQR"})
    assert refused.status_code == 400
    assert RecoveryCode.objects.filter(user=user).count() == 10
    response = client.post("/accounts/mfa/", {"code": mfa_next_code(user)})
    assert response.status_code == 200 and response["Cache-Control"].startswith("no-store")
    new_codes = recovery_codes_on_page(response.content)
    assert len(new_codes) == 10
    new_hashes = set(RecoveryCode.objects.filter(user=user).values_list("code_hash", flat=True))
    assert new_hashes == {otp.recovery_code_hash(c) for c in new_codes}
    assert not new_hashes & old_hashes
    (event,) = events("auth.mfa_recovery_codes_regenerated")
    assert event.details == {"recovery_codes": 10}


def test_five_wrong_codes_lock_the_second_factor(make_user) -> None:
    user = make_user("locked", Role.ADMINISTRATOR)
    secret = mfa_enroll(user)
    client = password_only(user)
    current = {totp_code(secret, otp.totp_step() + d) for d in (-1, 0, 1, 2)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in current)
    for _ in range(5):
        assert client.post("/accounts/mfa/verify/", {"code": wrong}).status_code == 400
    locked = client.post("/accounts/mfa/verify/", {"code": mfa_next_code(user)})
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert b"Too many wrong codes" in locked.content
    assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")  # still pending
    # The lockout is per user: another session of the same user is locked too.
    other = password_only(user)
    assert other.post("/accounts/mfa/verify/", {"code": mfa_next_code(user)}).status_code == 429
    assert len(events("auth.mfa_failed")) == 5
    lock_events = events("auth.mfa_locked")
    assert len(lock_events) == 2
    assert lock_events[0].outcome == "denied" and lock_events[0].actor_name == "locked"
    assert lock_events[0].details == {"limit": "user", "retry_after_seconds": 900}
    assert MfaDevice.objects.get(user=user).last_used_step < otp.totp_step()  # nothing used


# --- administrator reset ----------------------------------------------------------------


def test_admin_reset_ends_sessions_and_forces_reenrolment(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("lost-phone", Role.KEY_CUSTODIAN)
    target_client = signed_in(target)
    assert target_client.get("/keys/").status_code == 200
    admin = signed_in(admin_user)
    detail = admin.get(f"/users/{target.pk}/")
    assert b"enrolled" in detail.content and b"/mfa/reset/" in detail.content
    confirm = admin.get(f"/users/{target.pk}/mfa/reset/")
    assert confirm.status_code == 200 and b"Reset two-factor sign-in" in confirm.content

    response = admin.post(f"/users/{target.pk}/mfa/reset/", follow=True)
    assert b"was reset" in response.content
    assert not MfaDevice.objects.filter(user=target).exists()
    assert not RecoveryCode.objects.filter(user=target).exists()
    # The target's session ended: back to the sign-in page, not just to the MFA page.
    ended = target_client.get("/keys/")
    assert ended.status_code == 302 and ended["Location"].startswith("/accounts/login/")
    # Their next sign-in asks them to enrol a new authenticator.
    assert password_sign_in(Client(), target)["Location"].startswith("/accounts/mfa/enroll/")
    (event,) = events("auth.mfa_reset")
    assert (event.actor_name, event.target_id, event.target_label) == (
        admin_user.username,
        str(target.pk),
        "lost-phone",
    )
    assert event.details == {"confirmed_device": True, "recovery_codes_deleted": 10}


def test_only_administrators_reset_and_never_their_own(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("keep-phone", Role.CA_OPERATOR)
    mfa_enroll(target)
    custodian = signed_in(make_user("kc", Role.KEY_CUSTODIAN))
    assert custodian.get(f"/users/{target.pk}/mfa/reset/").status_code == 403
    assert custodian.post(f"/users/{target.pk}/mfa/reset/").status_code == 403
    auditor = signed_in(make_user("au", Role.AUDITOR))
    assert auditor.post(f"/users/{target.pk}/mfa/reset/").status_code == 403
    assert MfaDevice.objects.filter(user=target).exists()

    admin = signed_in(admin_user)
    response = admin.post(f"/users/{admin_user.pk}/mfa/reset/", follow=True)
    assert b"cannot reset your own" in response.content
    assert MfaDevice.objects.filter(user=admin_user).exists()
    assert events("auth.mfa_reset") == []


def test_mfa_reset_command_is_the_break_glass(signed_in, admin_user: User) -> None:
    client = signed_in(admin_user)
    out = StringIO()
    call_command("mfa_reset", admin_user.username, stdout=out)
    assert "was reset" in out.getvalue()
    assert not MfaDevice.objects.filter(user=admin_user).exists()
    (event,) = events("auth.mfa_reset")
    assert (event.actor_type, event.actor_name, event.target_label) == (
        "system",
        "system",
        admin_user.username,
    )
    assert client.get("/")["Location"].startswith("/accounts/login/")
    with pytest.raises(CommandError, match="no authenticator"):
        call_command("mfa_reset", admin_user.username, stdout=StringIO())
    with pytest.raises(CommandError, match="no user named"):
        call_command("mfa_reset", "nobody-here", stdout=StringIO())


# --- the secret -------------------------------------------------------------------------


def test_the_secret_is_stored_sealed_and_bound_to_its_row(make_user) -> None:
    first, second = make_user("s1", Role.ADMINISTRATOR), make_user("s2", Role.ADMINISTRATOR)
    secret = mfa_enroll(first)
    mfa_enroll(second)
    device, other = MfaDevice.objects.get(user=first), MfaDevice.objects.get(user=second)
    blob = bytes(device.sealed_secret)
    for form in (secret, secret.hex().encode(), otp.totp_secret_base32(secret).encode()):
        assert form not in blob
    assert unseal(blob, aad=device.aad) == secret
    with pytest.raises(EnvelopeIntegrityError):
        unseal(blob, aad=other.aad)
    # A blob copied onto another user's row does not open there: verification fails loudly.
    MfaDevice.objects.filter(pk=other.pk).update(sealed_secret=blob)
    with pytest.raises(EnvelopeIntegrityError):
        mfa.mfa_verify(user=second, code=totp_code(secret))


def test_rewrap_reseals_the_secrets(make_user, settings) -> None:
    key_1 = base64.b64encode(b"1" * 32).decode()
    key_2 = base64.b64encode(b"2" * 32).decode()
    settings.KMS_MASTER_KEYS = f"k1:{key_1}"
    keyring_reset()
    try:
        user = make_user("wrapped", Role.ADMINISTRATOR)
        secret = mfa_enroll(user)
        before = bytes(MfaDevice.objects.get(user=user).sealed_secret)
        settings.KMS_MASTER_KEYS = f"k2:{key_2},k1:{key_1}"
        keyring_reset()
        out = StringIO()
        call_command("rewrap", stdout=out)
        assert "accounts.MfaDevice.sealed_secret: re-sealed 1 of 1" in out.getvalue()
        settings.KMS_MASTER_KEYS = f"k2:{key_2}"
        keyring_reset()
        device = MfaDevice.objects.get(user=user)
        assert bytes(device.sealed_secret) != before
        assert unseal(device.sealed_secret, aad=device.aad) == secret
        assert mfa.mfa_verify(user=user, code=mfa_next_code(user)) == mfa.MfaMethod.TOTP
    finally:
        keyring_reset()


def test_codes_and_secrets_reach_no_audit_row_and_no_log(make_user, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True  # every SQL statement logged with its parameters
    try:
        user = make_user("leaky", Role.ADMINISTRATOR)
        client = password_only(user)
        page = client.get("/accounts/mfa/enroll/")
        secret = decode_secret(secret_on_page(page.content))
        first_code = totp_code(secret)
        codes = recovery_codes_on_page(
            client.post("/accounts/mfa/enroll/", {"code": first_code}).content
        )
        second = password_only(user)
        second.post("/accounts/mfa/verify/", {"code": "999999"})  # wrong: audited
        second.post("/accounts/mfa/verify/", {"code": codes[0]})
        third = password_only(user)
        sign_in_code = mfa_next_code(user)
        third.post("/accounts/mfa/verify/", {"code": sign_in_code})
    finally:
        connection.force_debug_cursor = False
    assert events("auth.mfa_enrolled") and events("auth.mfa_verified")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditevent")
        audit = "\x00".join(str(v) for row in cursor.fetchall() for v in row)
    logged = caplog.text + "\x00".join(
        str(r.getMessage()) + str(r.args) + str(r.__dict__) for r in caplog.records
    )
    assert "INSERT INTO" in logged  # the SQL was logged: the check below means something
    base32 = otp.totp_secret_base32(secret)
    needles = [base32, base32.lower(), secret.hex(), *codes, *(c.replace("-", "") for c in codes)]
    for needle in needles:
        assert needle not in audit, needle
        assert needle not in logged, needle
    for code in (first_code, sign_in_code):  # six digits standing alone, not inside a number
        pattern = rf"(?<!\d){code}(?!\d)"
        assert not re.search(pattern, audit), code
        assert not re.search(pattern, logged), code


def test_secrets_are_not_in_the_session(make_user) -> None:
    user = make_user("sess", Role.ADMINISTRATOR)
    client = password_only(user)
    secret = decode_secret(secret_on_page(client.get("/accounts/mfa/enroll/").content))
    client.post("/accounts/mfa/enroll/", {"code": totp_code(secret)})
    values = " ".join(str(v) for v in client.session.values())
    assert otp.totp_secret_base32(secret) not in values
    assert set(client.session.keys()) >= {mfa.SESSION_VERIFIED, mfa.SESSION_DEVICE}


def test_enroll_page_redirect_keeps_a_safe_next(make_user) -> None:
    user = make_user("nextie", Role.ADMINISTRATOR)
    client = password_only(user)
    location = client.get("/audit/?action=auth.sign_in")["Location"]
    assert urlsplit(location).path == "/accounts/mfa/enroll/"
    assert parse_qs(urlsplit(location).query) == {"next": ["/audit/?action=auth.sign_in"]}


def race(user: User, code: str) -> list[str]:
    """`THREADS` threads submit the same code at the same moment; what each one got."""
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            barrier.wait()
            mfa.mfa_verify(user=user, code=code)
            outcomes.append("passed")
        except mfa.MfaCodeInvalid:
            outcomes.append("refused")
        except BaseException as exc:
            outcomes.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sorted(outcomes)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_same_code_raced_from_many_requests_passes_once(make_user) -> None:
    user = make_user("racer", Role.ADMINISTRATOR)
    mfa_enroll(user)
    recovery = mfa.mfa_recovery_codes_regenerate(user=user, code=mfa_next_code(user))[0]
    for code in (mfa_next_code(user), recovery):
        assert race(user, code) == ["passed"] + ["refused"] * (THREADS - 1), code


def test_the_secret_stays_the_same_across_reloads_until_restarted(make_user) -> None:
    user = make_user("rita-reload", Role.KEY_CUSTODIAN)
    client = Client()
    password_sign_in(client, user)
    first = secret_on_page(client.get("/accounts/mfa/enroll/").content)
    assert secret_on_page(client.get("/accounts/mfa/enroll/").content) == first  # a reload
    # The app scanned before the reload makes codes that confirm the enrollment.
    response = client.post("/accounts/mfa/enroll/", {"code": totp_code(decode_secret(first))})
    assert response.status_code == 200
    assert events("auth.mfa_enrolled")


def test_start_again_makes_a_new_secret(make_user) -> None:
    user = make_user("sam-restart", Role.KEY_CUSTODIAN)
    client = Client()
    password_sign_in(client, user)
    first = secret_on_page(client.get("/accounts/mfa/enroll/").content)
    restarted = client.post("/accounts/mfa/enroll/", {"restart": "1"})
    assert restarted.status_code == 302
    page = client.get(restarted["Location"])
    second = secret_on_page(page.content)
    assert second != first
    assert "A new secret was made" in page.content.decode()
    refused = client.post("/accounts/mfa/enroll/", {"code": totp_code(decode_secret(first))})
    assert refused.status_code == 400
