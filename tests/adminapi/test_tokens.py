"""Personal API tokens: made only after the second factor, shown once, stored hashed,
refused once expired, revoked, or when their user loses what made them valid; audited."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts import mfa, services
from accounts.roles import Role
from adminapi.events import ApiAction
from adminapi.models import ApiToken
from adminapi.tokens import ApiTokenError, api_token_create
from audit.models import AuditAction, AuditEvent
from tests.factories import sign_in

from .conftest import bearer

ME = "/api/v1/admin/tokens/me"
KEYS = "/api/v1/admin/keys"


def _create_in_portal(browser: Client, **fields: object):
    data = {"name": "deploy job", "scope": "roles", "days": 30, **fields}
    return browser.post("/accounts/api-tokens/", data)


def test_a_token_is_made_after_the_second_factor_and_shown_once(make_user) -> None:
    custodian = make_user("kc", Role.KEY_CUSTODIAN)
    browser = sign_in(custodian)  # password, then the authenticator code
    response = _create_in_portal(browser)
    assert response.status_code == 302
    page = browser.get(response["Location"])
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    secret = page.context["secret"]
    assert secret.startswith("kms_") and secret in page.content.decode()
    again = browser.get(response["Location"])  # a reload never shows it again
    assert again.status_code == 410 and secret not in again.content.decode()
    me = Client(headers={"Authorization": f"Bearer {secret}"}).get(ME)
    assert me.status_code == 200
    assert me.json()["username"] == "kc" and me.json()["roles"] == ["key_custodian"]
    created = AuditEvent.objects.get(action=ApiAction.TOKEN_CREATED)
    assert created.actor_name == "kc" and "kms_" not in str(created.details)


def test_a_session_without_a_second_factor_cannot_make_one(make_user) -> None:
    auditor = make_user("aud", Role.AUDITOR)  # needs no MFA and has none
    browser = sign_in(auditor)
    listing = browser.get("/accounts/api-tokens/")
    assert listing.status_code == 200 and b'id="mfa-needed"' in listing.content
    assert _create_in_portal(browser, scope="read-only").status_code == 403
    assert not ApiToken.objects.exists()
    assert AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).exists()


def test_only_a_hash_is_stored(make_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    created = api_token_create(actor=None, user=user, name="ci", scope="roles", days=1)
    secret_part = created.secret.split("_", 2)[2]  # kms_<hex prefix>_<secret, may hold "_">
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert created.token.prefix in dump.getvalue()  # the row is in the dump...
    assert secret_part not in dump.getvalue()  # ...but not the token
    assert created.secret not in dump.getvalue()


@pytest.mark.parametrize(
    "spoil",
    [
        "expired",
        "revoked",
        "deactivated",
        "password_reset",
        "mfa_reset",
        "wrong_secret",
    ],
)
def test_a_token_stops_working(spoil: str, make_user, admin_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    api = bearer(user)
    assert api.get(ME).status_code == 200
    token = ApiToken.objects.get(pk=api.token.pk)
    if spoil == "expired":
        ApiToken.objects.filter(pk=token.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    elif spoil == "revoked":
        assert api.post(f"/api/v1/admin/tokens/{token.pk}/revoke").status_code == 200
    elif spoil == "deactivated":
        services.user_deactivate(actor=admin_user, user=user)
    elif spoil == "password_reset":
        services.user_password_reset(actor=admin_user, user=user)
    elif spoil == "mfa_reset":
        from tests.factories import mfa_enroll

        mfa_enroll(user)
        api = bearer(user)  # made under this authenticator
        assert api.get(ME).status_code == 200
        mfa.mfa_reset(actor=admin_user, user=user)
    else:
        api = Client(headers={"Authorization": f"Bearer {api.secret[:-4]}AAAA"})
    response = api.get(ME)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_role_taken_away_is_taken_from_the_token_at_once(make_user) -> None:
    admin_one = make_user("admin-one", Role.ADMINISTRATOR)
    user = make_user("kc", Role.KEY_CUSTODIAN, Role.AUDITOR)
    api = bearer(user)
    assert api.post(KEYS, {"name": "k1"}, content_type="application/json").status_code == 201
    services.user_roles_set(actor=admin_one, user=user, roles=[Role.AUDITOR], reason="moved")
    refused = api.post(KEYS, {"name": "k2"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
    assert api.get(KEYS).status_code == 200  # what the auditor role still gives


def test_a_read_only_token_never_changes_anything(make_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    api = bearer(user, scope="read-only")
    assert api.get(KEYS).status_code == 200
    refused = api.post(KEYS, {"name": "k1"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "read_only_token"
    denied = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).latest("sequence")
    assert denied.actor_name == "kc" and denied.details["reason"] == "read-only API token"
    assert not User.objects.get(pk=user.pk).api_tokens.filter(scope="roles").exists()


def test_uses_are_audited_and_garbage_writes_nothing(make_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    api = bearer(user)
    before = AuditEvent.objects.count()
    for header in ("", "Bearer", "Bearer nonsense", f"Bearer {api.secret[:-2]}xx", "Basic abc"):
        stranger = Client(headers={"Authorization": header} if header else {})
        assert stranger.get(KEYS).status_code == 401
        assert (
            stranger.post(KEYS, {"name": "x"}, content_type="application/json").status_code == 401
        )
    assert AuditEvent.objects.count() == before  # unauthenticated: not one row
    for _ in range(3):
        assert api.get(KEYS).status_code == 200
    used = AuditEvent.objects.filter(action=ApiAction.TOKEN_USED)
    assert used.count() == 1  # reads: once per token and minute
    assert api.post(KEYS, {"name": "k1"}, content_type="application/json").status_code == 201
    assert api.post(f"{KEYS}/k1/rotate", {}, content_type="application/json").status_code == 200
    writes = [e for e in used.order_by("sequence") if e.details["write"]]
    assert [e.details["path"] for e in writes] == [KEYS, f"{KEYS}/k1/rotate"]
    assert all(e.actor_name == "kc" and e.details["prefix"] == api.token.prefix for e in writes)
    assert AuditEvent.objects.filter(action="key.rotated", actor_name="kc").exists()
    assert ApiToken.objects.get(pk=api.token.pk).last_used_at is not None


def test_the_command_prints_a_token_once(make_user) -> None:
    make_user("ci-bot", Role.AUDITOR)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "api_token_create", "ci-bot", "--scope", "read-only", "--days", "1", stdout=out, stderr=err
    )
    secret = out.getvalue().strip()
    assert secret.startswith("kms_") and secret not in err.getvalue()
    assert Client(headers={"Authorization": f"Bearer {secret}"}).get(ME).status_code == 200
    event = AuditEvent.objects.get(action=ApiAction.TOKEN_CREATED)
    assert event.actor_name == "system"


@pytest.mark.parametrize("days", [0, 91])
def test_every_token_expires_within_90_days(days: int, make_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    with pytest.raises(ApiTokenError):
        api_token_create(actor=None, user=user, name="x", scope="roles", days=days)


def test_revoking_another_users_token_is_refused_through_the_api(make_user) -> None:
    one, other = make_user("one", Role.AUDITOR), make_user("other", Role.AUDITOR)
    theirs = bearer(other)
    response = bearer(one).post(f"/api/v1/admin/tokens/{theirs.token.pk}/revoke")
    assert response.status_code == 404
    assert theirs.get(ME).status_code == 200
